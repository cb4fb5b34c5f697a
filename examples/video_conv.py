"""Tell which digit moves which way in short video clips, with 3-D convolutions.

The step from examples/mnist_conv.py to video. An image batch is (N, C, H, W);
a video batch is (N, C, T, H, W), with T frames. A 3-D convolution slides a
(3, 3, 3) kernel over time as well as over height and width, so every output
value looks at 3 consecutive frames and can respond to motion, which no single
frame shows. What changes from the image example:

- the data: clips of MNIST digits sliding one pixel per frame in one of 8
  directions (``tf.data.moving_digits``), 16 frames of 32x32; the label says
  which digit and which direction (80 classes).
- the model: Conv((3, 3, 3)) and MaxPool((2, 2, 2)) instead of the 2-D layers.
- the loop: one call, ``tf.train.fit``, which runs the loop mnist_conv.py
  writes out, with the same guarantees (locked run folder, --resume...).

Your own videos: DIR/train/<class>/<clip> and DIR/test/<class>/<clip> (a clip
is a video file or a folder of frames) with ``--video-dir DIR``; the model is
built for colour clips and one class per folder. The training clips come
sorted by class, so they are shuffled every epoch (--no-shuffle turns it off).
``--predict CLIP`` names the classes of a new clip with the saved model.

    python examples/video_conv.py                  # 8,000 training clips, up to 10 epochs
    python examples/video_conv.py --epochs 1 --max-steps 20 --train-clips 1000   # a quick check
    python examples/video_conv.py --video-dir clips --size 48 --savepath runs/clips    # your own clips
    python examples/video_conv.py --video-dir clips --size 48 --savepath runs/clips --predict new.mp4
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
    """Every knob; the run's own (--device, --resume, --val-split...) come from tf.train.Settings."""

    lr: float = flag(3e-3, "learning rate of Adam")
    batch_size: int = flag(32, "clips per training step (a clip holds 21 times the values of an image)")
    checkpoint: str = flag("video_conv.h5", "file name of the best model in --savepath", resumable=True)
    shuffle: bool = flag(True, "shuffle the training clips every epoch (own clips come sorted by class)")
    dataset: str = flag("mnist", "digits of the generated clips", choices=["mnist", "fashion-mnist"])
    data_dir: str | None = flag(None, "folder with the MNIST files; unset: the cache, then download",
                                resumable=True)
    frames: int = flag(16, "frames per clip, T (at least 8: three 2x pools over time)")
    size: int = flag(32, "frame height and width (at least 8; generated clips: at least 13 + frames)")
    train_clips: int = flag(8000, "generated clips to train on")
    test_clips: int = flag(2000, "generated clips to test on")
    video_dir: str | None = flag(None, "train on your clips, DIR/train/<class>/<clip> and DIR/test/<class>/<clip>, "
                                       "video files or frame folders (pip install 'tinyflux[video]')", metavar="DIR")
    predict: str | None = flag(None, "print the top classes of one clip by the model saved in --savepath, "
                                     "instead of training", metavar="CLIP", resumable=True)

    def check(self) -> None:
        super().check()
        if self.frames < 8 or self.size < 8:
            raise ValueError(f"need --frames >= 8 and --size >= 8 (three 2x2x2 poolings); got --frames "
                             f"{self.frames}, --size {self.size}")
        if self.video_dir is None and self.predict is None and (
                self.size < 13 + self.frames or self.train_clips < 1 or self.test_clips < 1):
            raise ValueError(f"generated clips need --size >= 13 + frames and at least one clip of each split; got "
                             f"--frames {self.frames}, --size {self.size}, --train-clips {self.train_clips}, "
                             f"--test-clips {self.test_clips}")
        if (self.video_dir or self.predict) and not tf.data.video.available():
            raise ValueError(f"--video-dir and --predict: {tf.data.video.MISSING_AV}")


def parse_args(argv=None) -> VideoArgs:
    return tf.train.parse(VideoArgs, "Train a 3-D convnet to tell which digit moves which way in clips.", argv)


# -- Data ---------------------------------------------------------------------------
def get_processed_data(args: VideoArgs):
    """Training and test clips, uint8 (N, C, T, H, W), and labels, on the model's device (own clips: C = 3)."""
    if args.video_dir:
        train_clips, train_labels, classes = tf.data.video_folder(args.video_dir, "train", args.frames, args.size)
        test_clips, test_labels, _ = tf.data.video_folder(args.video_dir, "test", args.frames, args.size, classes)
    else:
        train_clips, train_labels = tf.data.moving_digits.clips("train", args.train_clips, args.frames, args.size,
                                                          args.dataset, args.data_dir, args.seed)
        test_clips, test_labels = tf.data.moving_digits.clips("test", args.test_clips, args.frames, args.size,
                                                        args.dataset, args.data_dir, args.seed)
        train_clips, test_clips = train_clips[:, None], test_clips[:, None]  # (N, T, H, W) -> (N, 1, T, H, W)
    move = tf.gpu if args.on_gpu() else tf.cpu
    return (move(train_clips), move(train_labels)), (move(test_clips), move(test_labels))


def class_names(args: VideoArgs) -> list[str]:
    """The class folders of --video-dir's training split, in label order; else the 80 generated classes."""
    return tf.data.video.find_clips(args.video_dir, "train")[2] if args.video_dir else tf.data.moving_digits.CLASSES


# -- Model --------------------------------------------------------------------------
def build_model(args: VideoArgs, input_shape=None, nclasses: int | None = None) -> nn.Chain:
    """mnist_conv's model with 3-D layers: (N, 1, 16, 32, 32) -> (N, 32, 2, 4, 4) -> 80 scores."""
    channels, frames, height, width = input_shape or (1, args.frames, args.size, args.size)
    nclasses = nclasses or len(class_names(args))
    features = 32 * (frames // 8) * (height // 8) * (width // 8)  # after three 2x2x2 pools; 32 * 2 * 4 * 4 = 1024
    return nn.Chain(
        nn.Conv((3, 3, 3), channels, 8, tf.relu, pad=1),  # each output sees 3 frames of 3x3 pixels
        nn.MaxPool((2, 2, 2)),  # halves time, height and width
        nn.Conv((3, 3, 3), 8, 16, tf.relu, pad=1),
        nn.MaxPool((2, 2, 2)),
        nn.Conv((3, 3, 3), 16, 32, tf.relu, pad=1),
        nn.MaxPool((2, 2, 2)),
        nn.flatten,  # (N, 32, 2, 4, 4) -> (N, 1024)
        nn.Dense(features, nclasses))


def augment(x, rng):
    """Gaussian noise of standard deviation 0.1 on every frame, as for the images."""
    return x + 0.1 * rng.standard_normal(x.shape, dtype=np.float32)


def load_best_model(args: VideoArgs, nclasses: int | None = None) -> nn.Chain:
    path = os.path.join(args.savepath, args.checkpoint)
    return tf.train.load_model(path, lambda *shape: build_model(args, *shape, nclasses), args.on_gpu())


# -- Predict ------------------------------------------------------------------------
def predict_clip(args: VideoArgs, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` most likely classes of the clip ``args.predict`` by the saved model, with probabilities."""
    if not os.path.exists(args.predict):
        raise tf.data.DatasetError(f"--predict: {args.predict} does not exist")
    path = os.path.join(args.savepath, args.checkpoint)
    saved = tf.checkpoint.read_metadata(path)
    shape, classes = saved.get("input_shape", []), saved.get("classes")
    if len(shape) != 4 or shape[0] != 3 or not classes:  # an image model, generated grey clips, no class names
        raise tf.CheckpointError(f"{path}: a model for input {tuple(shape) or 'of unknown shape'}"
                                 f"{'' if classes else ' without class names'}; --predict needs one trained on "
                                 "colour clips by video_conv.py --video-dir")
    channels, frames, height, width = shape
    model = load_best_model(args, len(saved["classes"]))
    clip = tf.data.video.decode_clip(args.predict, frames, (height, width))  # uint8 (3, T, H, W)
    with tf.no_grad():
        scores = model(tf.Tensor(tf.data.to_float_images(tf.gpu(clip[None]) if args.on_gpu() else clip[None])))
        probabilities = tf.cpu(tf.softmax(scores).data[0])  # (1, classes) -> (classes,)
    ranked = [(saved["classes"][i], float(probabilities[i])) for i in np.argsort(-probabilities)[:top]]
    print(f"{args.predict}:")
    for name, probability in ranked:
        print(f"  {probability:.4f}  {name}")
    return ranked


# -- Test ---------------------------------------------------------------------------
def test(args: VideoArgs) -> float:
    """The saved best model on the test clips; for generated clips also the digit and the direction apart."""
    _, (test_clips, test_labels) = get_processed_data(args)
    predicted, true = tf.cpu(tf.train.predict(test_clips, load_best_model(args))), tf.cpu(test_labels)
    acc = float(np.mean(predicted == true))
    print(f"accuracy(test_set, model) = {acc:.4f}")
    if not args.video_dir:
        directions = len(tf.data.moving_digits.DIRECTIONS)  # label = 8 * digit + direction
        digit = float(np.mean(predicted // directions == true // directions))
        direction = float(np.mean(predicted % directions == true % directions))
        print(f"digit right: {digit:.4f}, direction right: {direction:.4f}")
    return acc


def make_plots(args: VideoArgs, history: tf.train.History, classes: list[str]) -> None:
    """Training curves, 16 test clips (4 frames each) with their predicted classes, the first layer's filters."""
    _, (test_clips, test_labels) = get_processed_data(args)
    clips, true = tf.cpu(test_clips[:16]), tf.cpu(test_labels[:16])
    model = load_best_model(args)
    folder = args.plots
    paths = [tf.plots.training_curves(os.path.join(folder, "video_training_curves.png"), history.train_loss,
                                      history.test_accuracy, history.lr),
             tf.plots.prediction_grid(os.path.join(folder, "video_predictions.png"), tf.plots.clip_strips(clips),
                                      tf.cpu(tf.train.predict(clips, model)), true, columns=4, class_names=classes),
             tf.plots.conv_filters(os.path.join(folder, "video_first_layer_filters.png"),
                                   tf.cpu(model[0].weight.data))]  # for colour clips: the weights on red
    log.info("Pictures: " + ", ".join(paths))


def main(args: VideoArgs) -> tf.train.History | None:
    if args.predict or args.export_onnx:  # no training: the model saved in --savepath, used or exported
        return predict_clip(args) if args.predict else tf.train.export_saved(args, lambda *s: build_model(args, *s))
    classes = class_names(args)
    history = tf.train.fit(lambda shape: build_model(args, shape, len(classes)), lambda: get_processed_data(args),
                           settings=args, augment=augment, val_name="Test", metadata={"classes": classes})
    if tf.train.is_rank_zero(args):  # --distributed: rank 0 tests and draws
        test(args)
        if args.plots:
            make_plots(args, history, classes)
    return history


if __name__ == "__main__":
    sys.exit(tf.train.run_command(main, tf.train.setup_logging(parse_args())))
