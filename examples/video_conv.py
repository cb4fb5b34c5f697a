"""Tell which digit moves which way in short video clips,
with 3-D convolutions; then the same for your own clips.

The step from examples/mnist_conv.py to video: a batch is (N, C, T, H, W), with T frames; a 3-D
convolution slides a (3, 3, 3) kernel over time as well as height and width, so every output sees 3
consecutive frames and can respond to motion, which no single frame shows. What changes: the data
(``tf.data.moving_digits``: MNIST digits sliding in one of 8 directions; 80 classes), the layers
(Conv((3, 3, 3)), MaxPool((2, 2, 2))), and the loop: one call, ``tf.train.fit``. ``--video-dir DIR``
trains on your clips, DIR/train/<class>/<clip> and DIR/test/<class>/<clip> (video files or frame
folders), with what a few hundred clips need (each clip's colours standardised, a batch-norm model
with quarter means and dropout, AdamW, augmentation, shuffling, lr 1e-3, batch 8, 30 epochs; each
overridable); ``--predict CLIP_OR_FOLDER`` names the classes of new clips.

    python examples/video_conv.py --epochs 1 --max-steps 20 --train-clips 1000   # a quick check
    python examples/video_conv.py --video-dir clips --size 48 --val-split 0.2 --savepath runs/clips
    python examples/video_conv.py --savepath runs/clips --predict new_clips/ --out answers.csv
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

import tinyflux as tf
from tinyflux import nn
from tinyflux.train import flag

log = logging.getLogger("video_conv")


@dataclass
class VideoArgs(tf.train.Settings):
    """Every knob; the run's own (--device, --resume,
    --val-split...) come from tf.train.Settings."""

    lr: float | None = flag(None,
                            "learning rate; unset: 3e-3 for generated digits, 1e-3 for --video-dir")
    batch_size: int | None = flag(None,
                                  "clips per step; unset: 32 generated, 8 own (a "
                                  "clip is 21 images' values)")
    epochs: int | None = flag(None, "passes over the training clips; unset: 10 generated, 30 own",
                              resumable=True)
    model: str = flag("auto",
                      "small: the MNIST model in 3-D; bn: batch norm blocks, quarter means and "
                      "dropout, for a few hundred clips; auto: bn for --video-dir",
                      choices=["auto", "small", "bn"])
    augment: bool | None = flag(None,
                                "random crops, first frames and light; unset: on for --video-dir")
    max_stride: int = flag(1,
                           "with --augment: views skip frames, up to this stride (only "
                           "where speed is no class)")
    flip: bool = flag(False,
                      "with --augment, also mirror clips: never where a class is a "
                      "stance or screen direction")
    standardize: bool = flag(True,
                             "bn model: first each clip's colours to mean 0, variance "
                             "1 (tint, light, contrast)")
    checkpoint: str = flag("video_conv.h5", "file name of the best model in --savepath",
                           resumable=True)
    shuffle: bool = flag(True,
                         "shuffle the training clips every epoch (own clips come sorted by class)")
    dataset: str = flag("mnist", "digits of the generated clips",
                        choices=["mnist", "fashion-mnist"])
    data_dir: str | None = flag(None,
                                "folder with the MNIST files; unset: the cache, then download",
                                resumable=True)
    frames: int = flag(16, "frames per clip, T (at least 8: three 2x pools over time)")
    size: int = flag(32,
                     "frame height and width (at least 8; generated clips: at least 13 + frames)")
    train_clips: int = flag(8000, "generated clips to train on")
    test_clips: int = flag(2000, "generated clips to test on")
    video_dir: str | None = flag(None,
                                 "train on your clips, DIR/train/<class>/<clip> and "
                                 "DIR/test/<class>/<clip>, video files or frame folders (pip "
                                 "install 'tinyflux[video]')", metavar="DIR")
    predict: str | None = flag(None,
                               "print the top classes of a clip, or of each clip in a folder, by "
                               "the model saved in --savepath, instead of training",
                               metavar="CLIP", resumable=True)
    out: str | None = flag(None, "with --predict: also write the answers to this CSV file",
                           resumable=True)

    def check(self) -> None:
        # the defaults for a few hundred clips of one's own, else the digits'
        own = self.video_dir is not None
        for name, generated, clips in (("lr", 3e-3, 1e-3), ("batch_size", 32, 8),
                                       ("epochs", 10, 30), ("augment", False, True),
                                       ("model", "small", "bn")):
            if getattr(self, name) in (None, "auto"):
                setattr(self, name, clips if own else generated)
        super().check()
        generated = self.video_dir is None and self.predict is None
        clips = self.train_clips >= 1 and self.test_clips >= 1
        digits_fit = self.size >= 13 + self.frames and clips
        if self.frames < 8 or self.size < 8 or generated and not digits_fit:
            raise ValueError("need --frames >= 8 and --size >= 8 (three 2x2x2 poolings), for "
                             "generated clips --size >= 13 + frames and clips in both splits; "
                             f"got --frames {self.frames}, --size {self.size}, --train-clips "
                             f"{self.train_clips}, --test-clips {self.test_clips}")
        if self.augment and not self.video_dir and not self.predict:
            raise ValueError("--augment: for clips of your own (--video-dir); "
                             "generated digits get noise")
        if (self.video_dir or self.predict) and not tf.data.video.available():
            raise ValueError(f"--video-dir and --predict: {tf.data.video.MISSING_AV}")


def parse_args(argv=None) -> VideoArgs:
    return tf.train.parse(VideoArgs,
                          "Train a 3-D convnet to tell which digit moves which way in clips.", argv)


# -- Data ---------------------------------------------------------------------------
# with --augment: more frames and pixels, to draw views from
def decoded(args: VideoArgs) -> tuple[int, int]:
    return clip_augment(args).decoded()[:2] if args.augment else (args.frames, args.size)


def get_processed_data(args: VideoArgs):
    """Training and test clips, uint8 (N, C, T, H, W), and labels, on the
    model's device (own clips: C = 3). With --augment, test clips are seen
    as ClipAugment.center sees them; training views are drawn per batch."""
    if args.video_dir:
        frames, size = decoded(args)
        train_clips, train_labels, classes = tf.data.video_folder(args.video_dir, "train", frames,
                                                                  size)
        test_clips, test_labels, _ = tf.data.video_folder(args.video_dir, "test", frames, size,
                                                          classes)
        test_clips = clip_augment(args).center(test_clips) if args.augment else test_clips
    else:
        digits = (args.frames, args.size, args.dataset, args.data_dir, args.seed)
        train_clips, train_labels = tf.data.moving_digits.clips("train", args.train_clips, *digits)
        test_clips, test_labels = tf.data.moving_digits.clips("test", args.test_clips, *digits)
        # (N, T, H, W) -> (N, 1, T, H, W)
        train_clips, test_clips = train_clips[:, None], test_clips[:, None]
    move = args.to_device  # tf.gpu, tf.xpu or tf.cpu, as --device says
    return (move(train_clips), move(train_labels)), (move(test_clips), move(test_labels))


def clip_augment(args: VideoArgs) -> tf.data.augment.ClipAugment:
    return tf.data.augment.ClipAugment(args.frames, args.size, args.size, args.max_stride,
                                       flip=args.flip)


def class_names(args: VideoArgs) -> list[str]:
    """The class folders of --video-dir's training split,
    in label order; else the 80 generated classes."""
    return tf.data.video.find_clips(args.video_dir,
                                    "train")[2] if args.video_dir else tf.data.moving_digits.CLASSES


def build_model(args: VideoArgs, input_shape=None, nclasses: int | None = None) -> nn.Chain:
    """mnist_conv's model with 3-D layers: (N, 1, 16, 32, 32) -> (N,
    32, 2, 4, 4) -> 80 scores (--model small); or, for a few hundred
    clips of one's own, tf.models.video_bn_net (--model bn)."""
    channels, frames, height, width = input_shape or (1, args.frames, args.size, args.size)
    nclasses = nclasses or len(class_names(args))
    if args.model == "bn":
        return tf.models.video_bn_net(channels, nclasses, standardize=args.standardize)
    # after three 2x2x2 pools; 32 * 2 * 4 * 4 = 1024
    features = 32 * (frames // 8) * (height // 8) * (width // 8)
    return nn.Chain(
        nn.Conv((3, 3, 3), channels, 8, tf.relu, pad=1),  # each output sees 3 frames of 3x3 pixels
        nn.MaxPool((2, 2, 2)),  # halves time, height and width
        nn.Conv((3, 3, 3), 8, 16, tf.relu, pad=1),
        nn.MaxPool((2, 2, 2)),
        nn.Conv((3, 3, 3), 16, 32, tf.relu, pad=1),
        nn.MaxPool((2, 2, 2)),
        nn.flatten,  # (N, 32, 2, 4, 4) -> (N, 1024)
        nn.Dense(features, nclasses))


# for generated digits: Gaussian noise of standard deviation 0.1, as for the images
def add_noise(x, rng):
    return x + 0.1 * rng.standard_normal(x.shape, dtype=np.float32)


def load_best_model(args: VideoArgs, nclasses: int | None = None) -> nn.Chain:
    path = os.path.join(args.savepath, args.checkpoint)
    return tf.train.load_model(path, lambda *shape: build_model(args, *shape, nclasses),
                               args.to_device)


# network and clip shape as saved; its classes
def as_trained(args: VideoArgs, saved: dict) -> list[str] | None:
    args.model, (args.frames, args.size) = saved["network"], saved["input_shape"][1:3]
    # models saved before it existed had no InstanceNorm
    args.standardize = saved.get("standardize", False)
    return saved.get("classes")


def predict_clips(args: VideoArgs, top: int = 3) -> list:
    """The ``top`` classes of the clip ``args.predict``
    (or of every clip in that folder) by the saved model."""
    saved = {"network": "small", "augment": False,  # what runs saved before these keys existed used
             # refuses other models
             **tf.predict.clip_model_metadata(os.path.join(args.savepath, args.checkpoint))}
    classes, shape = as_trained(args, saved), (args.frames, args.size, args.size)
    view = tf.data.augment.ClipAugment.from_saved(saved["augment"],
                                                  *shape) if saved["augment"] else None
    rows = tf.predict.classify_clips(load_best_model(args, len(classes)), args.predict,
                                     view.decoded()[:2] if view else shape[:2], classes,
                                     view and view.center, top)
    return tf.predict.show_ranked(rows, args.out)  # one line per clip; a CSV file with --out


def test(args: VideoArgs) -> float:
    """The saved best model on the test clips, each class
    apart; for generated clips the digit and direction."""
    _, (test_clips, test_labels) = get_processed_data(args)
    predicted = tf.cpu(tf.train.predict(test_clips, load_best_model(args)))
    true = tf.cpu(test_labels)
    acc = float(np.mean(predicted == true))
    print(f"accuracy(test_set, model) = {acc:.4f}")
    if args.video_dir:  # each class apart, and which it is taken for
        names = class_names(args)
        confusion = tf.train.confusion_matrix(predicted, true, len(names))
        print("\n".join(tf.train.class_report(confusion, names)))
    else:
        directions = len(tf.data.moving_digits.DIRECTIONS)  # label = 8 * digit + direction
        digit = float(np.mean(predicted // directions == true // directions))
        direction = float(np.mean(predicted % directions == true % directions))
        print(f"digit right: {digit:.4f}, direction right: {direction:.4f}")
    return acc


def make_plots(args: VideoArgs, history: tf.train.History, classes: list[str]) -> None:
    _, (test_clips, test_labels) = get_processed_data(args)
    model = load_best_model(args)
    paths = tf.plots.clip_pictures(args.plots, history, tf.cpu(test_clips),
                                   tf.cpu(tf.train.predict(test_clips, model)),
                                   tf.cpu(test_labels), classes, tf.cpu(model[0].weight.data))
    log.info("Pictures: " + ", ".join(paths))


def main(args: VideoArgs):
    # no training: the model saved in --savepath, used or exported (built as it was trained)
    if args.predict:
        return predict_clips(args)
    if args.export_onnx:
        saved = tf.checkpoint.read_metadata(os.path.join(args.savepath, args.checkpoint))
        # models of generated clips: "small"
        classes = as_trained(args, {"network": "small", **saved})
        count = len(classes) if classes else None
        return tf.train.export_saved(args, lambda *shape: build_model(args, *shape, count))
    classes = class_names(args)
    # weight decay
    optimizer = (lambda params: tf.optim.AdamW(params, args.lr)) if args.model == "bn" else None
    # own clips: a few dozen validation clips reach 100%
    # long before the model has learned, so no early exit
    schedule = tf.train.ModelZoo(target=float("inf")) if args.video_dir else None
    history = tf.train.fit(lambda shape: build_model(args, shape, len(classes)),
                           lambda: get_processed_data(args), settings=args, optimizer=optimizer,
                           schedule=schedule, val_name="Test",
                           augment=clip_augment(args) if args.augment else add_noise,
                           view=clip_augment(args).center if args.augment else None,
                           metadata={"classes": classes, "network": args.model,
                                     "augment": args.augment and clip_augment(args).saved(),
                                     "standardize": args.standardize and args.model == "bn"})
    if tf.train.is_rank_zero(args):  # --distributed: rank 0 tests and draws
        test(args)
        if args.plots:
            make_plots(args, history, classes)
    return history


if __name__ == "__main__":
    sys.exit(tf.train.run_command(main, tf.train.setup_logging(parse_args())))
