"""Classify your own clips with a pretrained network, frozen
or fine-tuned, and a small head trained with tinyflux.

With a few hundred clips, a 3-D network trained from scratch has little to learn from. A network
trained on millions of images (ImageNet) or clips (Kinetics) already sees edges, textures, objects
and movements; here it runs, frozen, under a small head trained with every guarantee of a tinyflux
run (tf.train.fit). Its features are computed once per clip and kept (tf.nn.FrameFeatures,
ClipFeatures). --head says what the head sees of an image network run on every frame:

    mean    the frames' features averaged over time, then a dense layer: what is seen, in any order,
            so it cannot tell left from right, or a trick from the same trick played backwards;
    frames  the features kept in frame order, then a convolution over time (Conv((3,), F, 64)): what
            changes from frame to frame.

A 3-D network (a backbone whose input is (B, 3, T, H, W), such as torchvision's r3d_18) sees motion
itself: --head mean puts a dense layer on its clip features, and --fine-tune trains it too.

The pretrained network comes in as an ONNX file (tf.onnx.load). On a machine with internet access:

    pip install torch torchvision
    python -c "import torch, torchvision; \
m = torchvision.models.resnet18(weights='DEFAULT').eval(); m.fc = torch.nn.Identity(); \
torch.onnx.export(m, torch.zeros(1, 3, 224, 224), 'resnet18.onnx', input_names=['input'], \
dynamic_axes={'input': {0: 'N'}}, opset_version=13, dynamo=False)"

then, with clips in DIR/train/<class>/ and DIR/test/<class>/ (see video_conv.py):

    python examples/transfer_video.py --backbone resnet18.onnx --imagenet --video-dir DIR \
        --size 224 --frames 8

or a 3-D network pretrained on Kinetics-400 (r3d_18, mc3_18 or r2plus1d_18), exported the same way
with torchvision.models.video.r3d_18(weights='DEFAULT') and torch.zeros(1, 3, 16, 112, 112):

    python examples/transfer_video.py --backbone r3d_18.onnx --kinetics --video-dir DIR \
        --size 112 --frames 16
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

import tinyflux as tf
from tinyflux import nn
from tinyflux.train import flag

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision's video nets
KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)


@dataclass
class Args(tf.train.Settings):
    backbone: str = flag("", "the pretrained image network, an ONNX file "
                             "mapping (B, 3, H, W) to (B, F)", metavar="FILE")
    video_dir: str = flag("", "your clips: DIR/train/<class>/<clip> and DIR/test/<class>/<clip>",
                          metavar="DIR")
    imagenet: bool = flag(False,
                          "normalise the frames as ImageNet networks were trained "
                          "(mean and std per colour)")
    kinetics: bool = flag(False,
                          "normalise the clips as torchvision's Kinetics "
                          "video networks were trained")
    head: str = flag("mean",
                     "image backbones: mean (features averaged over time) or frames (kept in "
                     "order, a convolution over time)", choices=["mean", "frames"])
    fine_tune: bool = flag(False,
                           "3-D backbones: train the backbone too (its "
                           "features are then not cached)")
    frames: int = flag(8, "frames per clip, each run through the image network")
    size: int = flag(224, "frame height and width, as the image network expects")
    shuffle: bool = flag(True, "shuffle the training clips every epoch")
    checkpoint: str = flag("transfer.h5", "file name of the best model (the head) in --savepath",
                           resumable=True)

    def check(self) -> None:
        super().check()
        if not self.backbone or not self.video_dir:
            raise ValueError("--backbone FILE and --video-dir DIR are both needed")
        if self.imagenet and self.kinetics:
            raise ValueError("--imagenet and --kinetics: one normalisation, the backbone's")
        if self.export_onnx:
            raise ValueError("--export-onnx: not for this example; the backbone is an ONNX file "
                             "already, and the head alone is "
                             "tf.onnx.export(nn.Chain(nn.Dense(...)), ...)")


def build(args: Args, classes: int) -> nn.Chain:
    """The pretrained network on every frame (an image
    network) or on the whole clip (a 3-D one), then a head."""
    normalise = ((IMAGENET_MEAN, IMAGENET_STD) if args.imagenet
                 else (KINETICS_MEAN, KINETICS_STD) if args.kinetics else (None, None))
    backbone = tf.onnx.load(args.backbone)
    # (B, C, H, W): an image network, on every frame
    per_frame = len(tf.onnx.input_shape(args.backbone)) == 4
    if per_frame and args.fine_tune:
        raise ValueError("--fine-tune: for 3-D backbones; an image backbone stays frozen")
    if per_frame:
        features = nn.FrameFeatures(backbone, *normalise,
                                    over_time="mean" if args.head == "mean" else "keep")
    # trained with the head: its features change every step, so nothing is cached
    elif args.fine_tune:
        features = nn.Chain(standardised(*normalise), backbone.train())
    else:
        features = nn.ClipFeatures(backbone, *normalise)
    with tf.no_grad():  # F, from one black clip
        width = features(np.zeros((1, 3, args.frames, args.size, args.size), np.float32)).shape[1]
    # features (N, F, T): a convolution over time, then a mean over it
    if per_frame and args.head == "frames":
        return nn.Chain(features, nn.Conv((3,), width, 64, tf.relu, pad=1), nn.GlobalMeanPool(),
                        nn.Dense(64, classes))
    return nn.Chain(features, nn.Dense(width, classes))


def standardised(mean, std):
    """(x - mean) / std per colour of clips (N, 3, T, H,
    W), as the backbone was trained; x itself without them."""
    if mean is None:
        return lambda x: x
    mean, std = (tf.Tensor(np.asarray(v, np.float32).reshape(1, 3, 1, 1, 1)) for v in (mean, std))
    return lambda x: (x - mean) / std


def main(args: Args) -> float:
    train_set = tf.data.video_folder(args.video_dir, "train", args.frames, args.size)
    test_clips, test_labels, _ = tf.data.video_folder(args.video_dir, "test", args.frames,
                                                      args.size, train_set[2])
    model = build(args, len(train_set[2]))
    tf.train.fit(model, train_set[:2], (test_clips, test_labels), settings=args, val_name="Test",
                 metadata={"classes": train_set[2]})
    # the best head (the features are frozen: not saved)
    tf.load(f"{args.savepath}/{args.checkpoint}", model)
    accuracy = tf.train.accuracy(test_clips, test_labels, model)
    print(f"accuracy(test_set, model) = {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    args = tf.train.setup_logging(tf.train.parse(Args, __doc__.splitlines()[0]))
    sys.exit(tf.train.run_command(main, args))
