"""Classify your own clips with a network pretrained on images: its features per frame, averaged over time,
and a small head trained with tinyflux.

With a few hundred clips, a 3-D network trained from scratch has little to learn from. A network
trained on millions of images (ImageNet) already sees edges, textures and objects: here it runs,
frozen, on every frame (tf.nn.FrameFeatures), its features are averaged over the clip's frames, and
only a dense layer on top is trained, with every guarantee of a tinyflux run (tf.train.fit).

The pretrained network comes in as an ONNX file (tf.onnx.load). On a machine with internet access:

    pip install torch torchvision
    python -c "import torch, torchvision; m = torchvision.models.resnet18(weights='DEFAULT').eval(); \
m.fc = torch.nn.Identity(); torch.onnx.export(m, torch.zeros(1, 3, 224, 224), 'resnet18.onnx', \
input_names=['input'], dynamic_axes={'input': {0: 'N'}}, opset_version=13, dynamo=False)"

then, with clips in DIR/train/<class>/ and DIR/test/<class>/ (see video_conv.py):

    python examples/transfer_video.py --backbone resnet18.onnx --imagenet --video-dir DIR --size 224 --frames 8
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

import tinyflux as tf
from tinyflux import nn
from tinyflux.train import flag

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Args(tf.train.Settings):
    backbone: str = flag("", "the pretrained image network, an ONNX file mapping (B, 3, H, W) to (B, F)",
                         metavar="FILE")
    video_dir: str = flag("", "your clips: DIR/train/<class>/<clip> and DIR/test/<class>/<clip>", metavar="DIR")
    imagenet: bool = flag(False, "normalise the frames as ImageNet networks were trained (mean and std per colour)")
    frames: int = flag(8, "frames per clip, each run through the image network")
    size: int = flag(224, "frame height and width, as the image network expects")
    shuffle: bool = flag(True, "shuffle the training clips every epoch")
    checkpoint: str = flag("transfer.h5", "file name of the best model (the head) in --savepath", resumable=True)

    def check(self) -> None:
        super().check()
        if not self.backbone or not self.video_dir:
            raise ValueError("--backbone FILE and --video-dir DIR are both needed")
        if self.export_onnx:
            raise ValueError("--export-onnx: not for this example; the backbone is an ONNX file already, and the "
                             "head alone is tf.onnx.export(nn.Chain(nn.Dense(...)), ...)")


def build(args: Args, classes: int) -> nn.Chain:
    """The frozen image network on every frame, then a trained dense layer on the time-averaged features."""
    normalise = (IMAGENET_MEAN, IMAGENET_STD) if args.imagenet else (None, None)
    features = nn.FrameFeatures(tf.onnx.load(args.backbone), *normalise)
    width = features(np.zeros((1, 3, 1, args.size, args.size), np.float32)).shape[1]  # F, from one black frame
    return nn.Chain(features, nn.Dense(width, classes))


def main(args: Args) -> float:
    train_set = tf.data.video_folder(args.video_dir, "train", args.frames, args.size)
    test_clips, test_labels, _ = tf.data.video_folder(args.video_dir, "test", args.frames, args.size, train_set[2])
    model = build(args, len(train_set[2]))
    tf.train.fit(model, train_set[:2], (test_clips, test_labels), settings=args, val_name="Test",
                 metadata={"classes": train_set[2]})
    tf.load(f"{args.savepath}/{args.checkpoint}", model)  # the best head (the features are frozen: not saved)
    accuracy = tf.train.accuracy(test_clips, test_labels, model)
    print(f"accuracy(test_set, model) = {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    sys.exit(tf.train.run_command(main, tf.train.setup_logging(tf.train.parse(Args, __doc__.splitlines()[0]))))
