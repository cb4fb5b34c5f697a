"""Small models and batches shaped like MNIST's, for the tests of the GPU path on the CPU (fast to run there)."""
import numpy as np

import tinyflux as tf
from tinyflux import nn


def mnist_like_model(video=False):
    if video:
        return nn.Chain(nn.Conv((3, 3, 3), 1, 4, tf.relu, pad=1), nn.MaxPool((2, 2, 2)),
                        nn.Conv((3, 3, 3), 4, 4, tf.relu, stride=2), nn.flatten, nn.Dense(4 * 1 * 1 * 1, 5))
    return nn.Chain(nn.Conv((3, 3), 1, 8, tf.relu, pad=1), nn.MaxPool((2, 2)),
                    nn.Conv((3, 3), 8, 8, tf.relu, pad=1), nn.MaxPool((2, 2)),
                    nn.Conv((3, 3), 8, 6, stride=2, pad=1), tf.relu, nn.flatten, nn.Dense(6 * 2 * 2, 10))


def mnist_like_batches(count, video=False):
    rng = np.random.default_rng(4)
    shape, classes = ((4, 1, 8, 8, 8), 5) if video else ((4, 1, 12, 12), 10)
    return [(rng.random(shape, dtype=np.float32), rng.integers(0, classes, 4)) for _ in range(count)]
