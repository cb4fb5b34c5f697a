"""Minibatches as the model-zoo makes them: consecutive
slices, the last one smaller, shuffling optional.

Images and clips arrive as uint8 (0..255) and leave as float32 in [0, 1]
with a channel axis, (N, C, *S), which is what ``nn.Conv`` takes; the rule
that tells a channel axis from a spatial one is :func:`input_layout`'s.
Floating-point images are taken as already scaled and only become float32;
other integer types are refused, since no single divisor fits them all
(uint16 frames may use 0..4095 or 0..65535).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..backends import get_array_module


def input_layout(shape: tuple, spatial_dims: int | None = None) -> tuple[int, bool]:
    """How a batch of shape ``shape`` is laid out: (number
    of spatial axes, whether it has a channel axis).

    The rule. A batch is ``(N, C, *S)``, with a channel axis C after the
    batch axis N, or ``(N, *S)`` for one channel, as MNIST's (N, 28, 28) is.
    ``spatial_dims`` is the length of S: 2 for images (H, W), 3 for clips
    (T, H, W), 1 for sequences. Given, the batch must have 1 + spatial_dims
    axes (one channel, added) or 2 + spatial_dims axes (channels present).
    Left out, it is read from the number of axes where only one reading exists:

        3 axes  (N, H, W)        one-channel images (MNIST)
        5 axes  (N, C, T, H, W)  clips with channels (colour video, or C = 1)

    and a 4-axis batch is refused, because it could be colour images
    (N, C, H, W) or one-channel clips (N, T, H, W): pass spatial_dims.
    """
    ndim = len(shape)
    if spatial_dims is not None:
        if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        if ndim == spatial_dims + 1:
            return spatial_dims, False
        if ndim == spatial_dims + 2:
            return spatial_dims, True
        raise ValueError(f"a batch with {spatial_dims} spatial axes has shape (N, *S) or (N, C, "
                         f"*S), {spatial_dims + 1} or {spatial_dims + 2} axes; "
                         f"got shape {tuple(shape)}")
    if ndim == 3:
        return 2, False
    if ndim == 5:
        return 3, True
    if ndim == 4:
        raise ValueError(f"a batch of shape {tuple(shape)} is ambiguous: colour images (N, C, H, "
                         "W) or one-channel clips (N, T, H, W)? Pass spatial_dims=2 for images or "
                         "spatial_dims=3 for clips")
    raise ValueError("expected a batch of images (N, H, W) or clips (N, C, T, H, W), or pass "
                     f"spatial_dims; got shape {tuple(shape)}")


def check_pixel_type(dtype) -> None:
    """Refuse a dtype that is neither uint8 (0..255) nor floating point (already scaled)."""
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise TypeError("images must be uint8 (0..255, divided by 255 here) or floating point "
                        f"(taken as they are), got {dtype}: scale them to floats in [0, 1] "
                        "yourself, e.g. frames / 4095 for 12-bit frames")


def to_float_images(images, spatial_dims: int | None = None):
    """uint8 images or clips in 0..255 -> float32 in [0, 1], with a channel axis: (N, C, *S).

    Floating-point images are only converted to float32, not divided again.
    ``(N, *S)`` gains a channel axis of size 1: MNIST's uint8 (N, 28, 28)
    becomes float32 (N, 1, 28, 28). ``(N, C, *S)`` keeps its channels. Which
    one a shape is follows the rule of :func:`input_layout`. Works on NumPy
    and CuPy arrays alike (the images may already be on the GPU).
    """
    _, has_channels = input_layout(images.shape, spatial_dims)
    check_pixel_type(images.dtype)
    floats = images.astype(np.float32)
    if images.dtype == np.uint8:
        floats *= 1 / 255
    if has_channels:
        return floats
    return floats.reshape(images.shape[0], 1, *images.shape[1:])  # (N, *S) -> (N, 1, *S): add C = 1


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False,
            rng: np.random.Generator | None = None, spatial_dims: int | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x float32 (B, C, *S) in [0, 1], labels (B,)) batches covering the data once.

    ``images`` are uint8 (or floats) (N, *S) or (N, C, *S), read by the rule of
    :func:`input_layout`: MNIST's (N, 28, 28) gives x of (B, 1, 28, 28).
    Consecutive examples by default, as the original does; with ``shuffle`` a
    new random order (from ``rng``) on every call, i.e. every epoch.
    """
    input_layout(images.shape, spatial_dims)
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be at least 1, got {batch_size}")
    if len(images) != len(labels):
        raise ValueError(f"batches: {len(images)} images but {len(labels)} labels")
    # The checks above run at the call; the batches come from a generator, which would run nothing
    # (not even a check) until the first batch is asked for.
    return _batches(images, labels, batch_size, shuffle, rng, spatial_dims)


def _batches(images, labels, batch_size, shuffle, rng, spatial_dims):
    order = None
    if shuffle:
        order = (rng or np.random.default_rng()).permutation(len(images))
        order = get_array_module(images).asarray(order)  # index GPU images with a GPU array
    # An h5py dataset reads a list of rows only in increasing order; within one batch the order
    # of the examples changes nothing (the loss is their mean), so such a batch is read sorted.
    in_file = type(images).__module__.startswith("h5py")
    for start in range(0, len(images), batch_size):
        index = slice(start,
                      start + batch_size) if order is None else order[start:start + batch_size]
        if in_file and order is not None:
            index = np.sort(index)
        yield to_float_images(images[index], spatial_dims), labels[index]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # ceiling division: the last batch may be smaller
