"""Your own network on your own arrays, with every
guarantee of a tinyflux run, in one call to tf.train.fit.

Replace my_data (uint8 images (N, [C,] H, W) or clips (N, C, T, H, W); labels 0..K-1) and my_model.
The run is locked, keeps the best model by validation accuracy, saves its whole state every epoch
(--resume goes on exactly), stops with an error on NaN, and shows a progress bar on a terminal:
    python examples/own_model.py --savepath runs/own [--epochs 8 --resume]
    # the best model: runs/own/model.h5
"""
import sys
from dataclasses import dataclass
import numpy as np
import tinyflux as tf
from tinyflux import nn
from tinyflux.train import flag


@dataclass
# the run's flags (--epochs, --savepath, --resume...), with these defaults
class Args(tf.train.Settings):
    lr: float = flag(3e-3, "learning rate of Adam")
    epochs: int = flag(4, "passes over the training set", resumable=True)
    val_split: float = flag(0.2, "fraction of the data held out to choose the best model",
                            metavar="FRACTION")
    shuffle: bool = flag(True, "shuffle the training set every epoch")


def my_data(count: int = 512, seed: int = 0):
    """Stand-in data: 16x16 noise with one bright row (label 0) or column (label 1)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (count, 16, 16)).astype(np.uint8)
    labels = rng.integers(0, 2, count)
    for image, label, line in zip(images, labels, rng.integers(0, 16, count)):
        (image[:, line] if label else image[line, :])[:] = 255  # a view: writes into the image
    return images, labels


def my_model(shape):  # built for one example's (C, H, W), which fit reads from the data
    channels, height, width = shape
    return nn.Chain(nn.Conv((3, 3), channels, 8, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.flatten,
                    nn.Dense(8 * (height // 2) * (width // 2), 2))


if __name__ == "__main__":
    args = tf.train.setup_logging(tf.train.parse(Args, "Train my own model on my own arrays."))
    sys.exit(tf.train.run_command(
        lambda settings: tf.train.fit(my_model, my_data(), settings=settings), args))
