"""Tell which digit moves which way in short video clips, with 3-D convolutions.

The step from examples/mnist_conv.py to video. An image batch is
(N, C, H, W); a video batch is (N, C, T, H, W), with T frames. A 3-D
convolution slides a (3, 3, 3) kernel over time as well as over height and
width, so every output value looks at 3 consecutive frames and can respond to
motion, which no single frame shows. Only two things change from the image
example:

- the data: clips generated from MNIST digits (:func:`make_clips`), 16 frames
  of 32x32 by default, each a digit sliding one pixel per frame in one of 8
  directions; the label says which digit and which direction (80 classes).
  Any frame shows the digit; the direction is in the change from one frame
  to the next, so for it the model must compare frames, as it would to tell
  one skateboard trick from another. Generated deterministically from the
  seed, then cached.
- the model: Conv((3, 3, 3)) and MaxPool((2, 2, 2)) instead of the 2-D layers.

The training loop, the checkpoint and the test are mnist_conv.py's, imported
from it: they never look at the shape of the data.

Your own videos: lay them out as DIR/train/<class>/<clip> and
DIR/test/<class>/<clip> (a clip is a video file or a folder of frames) and
pass ``--video-dir DIR``; ``tinyflux.data.video_folder`` reads them in colour
(N, 3, T, H, W), and the model is built for 3 channels and as many classes
as there are class folders. ``--predict CLIP`` then names the classes of a
new clip with the saved model.

    python examples/video_conv.py                  # 8,000 training clips, up to 10 epochs
    python examples/video_conv.py --epochs 1 --max-steps 20 --train-clips 1000   # a quick check
    python examples/video_conv.py --plots plots    # curves, clips with predictions, 3-D filters
    python examples/video_conv.py --video-dir clips --size 48 --savepath runs/clips    # your own clips
    python examples/video_conv.py --video-dir clips --size 48 --savepath runs/clips --predict new.mp4
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

import mnist_conv  # the image example, next to this file: its loop, checkpoint and test
import tinyflux as tf
from tinyflux import nn
from tinyflux.files import atomic_path

log = logging.getLogger("video_conv")

# The 8 directions: (rows, columns) the digit moves per frame; rows grow downwards, as in an image.
DIRECTIONS = {"right": (0, 1), "down-right": (1, 1), "down": (1, 0), "down-left": (1, -1),
              "left": (0, -1), "up-left": (-1, -1), "up": (-1, 0), "up-right": (-1, 1)}
# The 80 classes: label = 8 * digit + direction index, so label 0 is "0 right" and 79 is "9 up-right".
CLASSES = [f"{digit} {direction}" for digit in range(10) for direction in DIRECTIONS]
CLIP_FORMAT = 3  # part of the cache file name: change it when make_clips changes, so old files are not reused


# -- Arguments ----------------------------------------------------------------------
@dataclass
class VideoArgs(mnist_conv.Args):
    """mnist_conv's Args with other defaults, and the shape and number of the clips."""

    epochs: int = 10
    batch_size: int = 32  # a clip holds 21 times the values of an image: smaller batches, more steps
    checkpoint: str = "video_conv.h5"
    frames: int = 16  # T, frames per clip (at least 8: three 2x pools over time)
    size: int = 32  # H = W, pixels per side (at least 13 + frames: a 14-pixel digit moving frames - 1 pixels)
    train_clips: int = 8000
    test_clips: int = 2000
    video_dir: str | None = None  # real clips in video_dir/<split>/<class>/<clip>; None: generated digits
    predict: str | None = None  # a clip to classify with the model saved in savepath (no training)


def parse_args(argv=None) -> VideoArgs:
    defaults = VideoArgs()
    p = mnist_conv.make_parser(defaults, "Train a 3-D convnet to tell which digit moves which way in clips.")
    p.add_argument("--frames", type=int, default=defaults.frames, help="frames per clip (at least 8)")
    p.add_argument("--size", type=int, default=defaults.size,
                   help="frame height and width (at least 8; for generated clips at least 13 + frames)")
    p.add_argument("--train-clips", type=int, default=defaults.train_clips, help="generated clips to train on")
    p.add_argument("--test-clips", type=int, default=defaults.test_clips, help="generated clips to test on")
    p.add_argument("--video-dir", metavar="DIR", default=defaults.video_dir,
                   help="train on your clips, DIR/train/<class>/<clip> and DIR/test/<class>/<clip> (video files "
                        "or frame folders; needs pip install 'tinyflux[video]'), instead of generated digits")
    p.add_argument("--predict", metavar="CLIP", default=defaults.predict,
                   help="print the top classes of one clip (video file or frame folder) by the model saved in "
                        "--savepath, instead of training")
    args = mnist_conv.check_args(VideoArgs(**vars(p.parse_args(argv))), p)
    if args.frames < 8 or args.size < 8:
        p.error(f"need --frames >= 8 and --size >= 8 (three 2x2x2 poolings); got --frames {args.frames}, "
                f"--size {args.size}")
    generated = args.video_dir is None and args.predict is None
    if generated and (args.size < 13 + args.frames or args.train_clips < 1 or args.test_clips < 1):
        p.error(f"generated clips need --size >= 13 + frames and at least one clip of each split; got --frames "
                f"{args.frames}, --size {args.size}, --train-clips {args.train_clips}, "
                f"--test-clips {args.test_clips}")
    if (args.video_dir or args.predict) and not tf.data.video.available():
        p.error(f"--video-dir and --predict: {tf.data.video.MISSING_AV}")
    return args


# -- Data ---------------------------------------------------------------------------
def make_clips(digits: np.ndarray, digit_labels: np.ndarray, count: int, frames: int, size: int,
               rng: np.random.Generator):
    """``count`` clips uint8 (count, frames, size, size) of digits sliding 1 pixel per frame, and labels.

    Each clip takes a random digit image, shrinks it from 28x28 to 14x14 (the
    mean of each 2x2 block) so that it has room to move, and draws it on a
    black size x size frame: at a random start position, then one step
    further in a random direction at every frame. The start is drawn among
    the positions that keep the digit inside the frame until the last frame.
    The label is 8 * digit + the index of the direction in DIRECTIONS.
    """
    steps = np.array(list(DIRECTIONS.values()))  # (8, 2): rows and columns per frame
    directions = rng.integers(0, len(steps), count)
    chosen = rng.choice(len(digits), count, replace=count > len(digits))
    labels = (len(steps) * digit_labels[chosen].astype(np.int64) + directions).astype(np.uint8)
    picked = digits[chosen]  # (count, 28, 28)
    blocks = picked.reshape(count, picked.shape[1] // 2, 2, picked.shape[2] // 2, 2)  # -> (count, 14, 2, 14, 2)
    small = blocks.mean(axis=(2, 4)).round().astype(np.uint8)  # (count, 14, 2, 14, 2) -> (count, 14, 14)
    room = size - small.shape[1]  # the largest top-left position that keeps the digit inside
    travel = steps[directions] * (frames - 1)  # (count, 2): how far each clip moves in rows and columns
    starts = rng.integers(np.maximum(0, -travel), room - np.maximum(0, travel) + 1)  # (count, 2)
    clips = np.zeros((count, frames, size, size), dtype=np.uint8)
    for i in range(count):
        for t in range(frames):
            row, col = starts[i] + steps[directions[i]] * t
            clips[i, t, row:row + small.shape[1], col:col + small.shape[2]] = small[i]
    return clips, labels


def load_clips(args: VideoArgs, split: str):
    """The clips of one split, from the cache, else made from the dataset's digits of that split and cached.

    Training clips come from training digits and test clips from test digits,
    so the test measures digits the model has never seen.
    """
    count = args.train_clips if split == "train" else args.test_clips
    name = f"v{CLIP_FORMAT}-{args.dataset}-{split}-{count}x{args.frames}x{args.size}x{args.size}-seed{args.seed}.npz"
    path = tf.data.cache_dir("moving-digits") / name
    if path.exists():
        with np.load(path) as cached:
            return cached["clips"], cached["labels"]
    log.info(f"Making {count} {split} clips of {args.frames} frames of {args.size}x{args.size} (cached in {path})")
    digits, digit_labels = tf.data.load(args.dataset, split, root=args.data_dir)
    seed = args.seed if split == "train" else args.seed + 1  # different random motion for the test clips
    clips, labels = make_clips(digits, digit_labels, count, args.frames, args.size, np.random.default_rng(seed))
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, clips=clips, labels=labels)  # a file object: np.savez would append .npz to a name
    return clips, labels


def get_processed_data(args: VideoArgs):
    """Training and test clips, uint8 (N, C, T, H, W), and their labels, on the device the model will use.

    Real clips from --video-dir come in colour (C = 3); generated ones are grey
    and get their one channel axis here, so that both have the same layout.
    """
    if args.video_dir:
        train_clips, train_labels, classes = tf.data.video_folder(args.video_dir, "train", args.frames, args.size)
        test_clips, test_labels, _ = tf.data.video_folder(args.video_dir, "test", args.frames, args.size, classes)
    else:
        (train_clips, train_labels), (test_clips, test_labels) = load_clips(args, "train"), load_clips(args, "test")
        train_clips, test_clips = train_clips[:, None], test_clips[:, None]  # (N, T, H, W) -> (N, 1, T, H, W)
    move = tf.gpu if mnist_conv.use_gpu(args) else (lambda a: a)
    return (move(train_clips), move(train_labels)), (move(test_clips), move(test_labels))


def class_names(args: VideoArgs) -> list[str]:
    """The class folders of --video-dir's training split, in label order; else the 80 generated classes."""
    return tf.data.video.find_clips(args.video_dir, "train")[2] if args.video_dir else CLASSES


# -- Model --------------------------------------------------------------------------
def build_model(args: VideoArgs, input_shape=None, nclasses: int | None = None) -> nn.Chain:
    """mnist_conv's model with 3-D layers: (N, 1, 16, 32, 32) -> (N, 32, 2, 4, 4) -> 80 scores.

    ``input_shape`` is one clip's (channels, frames, height, width), as train() finds it in the
    data; by default the generated clips' (1, frames, size, size).
    """
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


# -- Predict ------------------------------------------------------------------------
def predict_clip(args: VideoArgs, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` most likely classes of the clip ``args.predict`` by the saved model, with probabilities.

    The checkpoint holds what this needs besides the weights: the input shape the
    model was built for and the class names, so no data set is read.
    """
    if not os.path.exists(args.predict):
        raise tf.data.DatasetError(f"--predict: {args.predict} does not exist")
    path = mnist_conv.checkpoint_path(args)
    saved = tf.io.read_metadata(path)
    if "input_shape" not in saved or "classes" not in saved:
        raise tf.CheckpointError(f"{path}: saved without its input shape and class names (an older tinyflux); "
                                 "train again to predict with it")
    channels, frames, height, width = saved["input_shape"]
    if channels != 3:
        raise tf.CheckpointError(f"{path}: the model was trained on {channels}-channel clips (generated digits); "
                                 "--predict reads colour video, for a model trained with --video-dir")
    model = build_model(args, tuple(saved["input_shape"]), len(saved["classes"]))
    tf.load(path, model)
    clip = tf.data.video.decode_clip(args.predict, frames, (height, width))  # uint8 (3, T, H, W)
    with tf.no_grad():
        scores = model(tf.Tensor(tf.data.to_float_images(clip[None])))  # (1, 3, T, H, W) -> (1, classes)
        probabilities = tf.backend.to_cpu_array(tf.softmax(scores).data[0])  # (classes,)
    best = np.argsort(-probabilities)[:top]
    ranked = [(saved["classes"][i], float(probabilities[i])) for i in best]
    print(f"{args.predict}:")
    for name, probability in ranked:
        print(f"  {probability:.4f}  {name}")
    return ranked


# -- Test, by part -----------------------------------------------------------------
def accuracy_by_part(args: VideoArgs) -> tuple[float, float]:
    """How often the saved best model names the right digit, and the right direction (generated clips)."""
    model = mnist_conv.load_best_model(args, build_model)
    _, (test_clips, test_labels) = get_processed_data(args)
    predicted, true = tf.cpu(mnist_conv.predict(test_clips, model)), tf.cpu(test_labels).astype(np.int64)
    digit = float(np.mean(predicted // len(DIRECTIONS) == true // len(DIRECTIONS)))
    direction = float(np.mean(predicted % len(DIRECTIONS) == true % len(DIRECTIONS)))
    print(f"digit right: {digit:.4f}, direction right: {direction:.4f}")
    return digit, direction


# -- Pictures -----------------------------------------------------------------------
def make_plots(args: VideoArgs, history: mnist_conv.History) -> None:
    """Training curves, test clips with their predicted classes, and the first layer's 3-D filters."""
    model = mnist_conv.load_best_model(args, build_model)
    _, (test_clips, test_labels) = get_processed_data(args)
    n = min(16, len(test_clips))
    predicted = tf.cpu(mnist_conv.predict(test_clips[:n], model))
    # A clip as one grey picture: 4 of its frames side by side, with a grey line between them
    frames = np.linspace(0, args.frames - 1, 4).astype(int)
    shown = tf.cpu(test_clips[:n]).mean(axis=1)[:, frames].round().astype(np.uint8)  # (n, C, T, H, W) -> (n, 4, H, W)
    shown = np.pad(shown, ((0, 0), (0, 0), (0, 0), (0, 2)), constant_values=128)  # (n, 4, H, W + 2)
    strips = shown.transpose(0, 2, 1, 3).reshape(n, args.size, -1)  # (n, H, 4, W + 2) -> (n, H, 4 (W + 2))
    paths = [
        tf.plots.training_curves(os.path.join(args.plots, "video_training_curves.png"), history.train_loss,
                                 history.test_accuracy, history.lr),
        tf.plots.prediction_grid(os.path.join(args.plots, "video_predictions.png"), strips, predicted,
                                 tf.cpu(test_labels[:n]), columns=4, class_names=class_names(args)),
        tf.plots.conv_filters(os.path.join(args.plots, "video_first_layer_filters.png"),
                              tf.cpu(model[0].weight.data)),  # for colour clips: the weights on red
    ]
    log.info("Pictures: " + ", ".join(paths))


def main(arguments: VideoArgs) -> None:
    if arguments.predict:
        predict_clip(arguments)
        return
    run_history = mnist_conv.train(arguments, get_processed_data, build_model, classes=class_names(arguments))
    if not mnist_conv.is_rank_zero(arguments):  # --distributed: rank 0 tests and draws
        return
    mnist_conv.test(arguments, get_processed_data, build_model)
    if not arguments.video_dir:
        accuracy_by_part(arguments)
    if arguments.plots:
        make_plots(arguments, run_history)


if __name__ == "__main__":
    sys.exit(mnist_conv.run_script(mnist_conv.setup_logging(parse_args()), main))
