"""Minibatches as the model-zoo makes them: consecutive slices, the last one smaller, shuffling optional."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import backend


def to_float_images(images):
    """uint8 (N, 28, 28) in 0..255 -> float32 (N, 1, 28, 28) in [0, 1] (one input channel).

    Works on NumPy and CuPy arrays alike (the images may already be on the GPU).
    """
    floats = images.astype(np.float32)
    floats *= 1 / 255
    return floats.reshape(images.shape[0], 1, *images.shape[1:])  # (N, 28, 28) -> (N, 1, 28, 28): add C = 1


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False,
            rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x float32 (B, 1, 28, 28) in [0, 1], labels (B,)) batches covering the data once.

    Consecutive examples by default, as the original does; with ``shuffle`` a
    new random order (from ``rng``) on every call, i.e. every epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be at least 1, got {batch_size}")
    if len(images) != len(labels):
        raise ValueError(f"batches: {len(images)} images but {len(labels)} labels")
    order = None
    if shuffle:
        order = (rng or np.random.default_rng()).permutation(len(images))
        order = backend.get_array_module(images).asarray(order)  # index GPU images with a GPU array
    for start in range(0, len(images), batch_size):
        index = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        yield to_float_images(images[index]), labels[index]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # ceiling division: the last batch may be smaller
