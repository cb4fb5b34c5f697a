"""Moving digits: short clips of MNIST digits sliding
in one of 8 directions, a video task made from images.

A clip is T frames of S x S pixels (16 of 32x32 by default). Each shows one
digit, shrunk to 14x14, that moves one pixel per frame in one of 8 directions;
the label says which digit and which direction, 8 * digit + direction (80
classes). Any single frame shows the digit, but the direction is only in the
change from one frame to the next: a model must compare frames to tell it, as
it would to tell one skateboard trick from another. The clips are generated
deterministically from a seed and cached (``examples/video_conv.py``).
"""
from __future__ import annotations

import logging

import numpy as np

from ..files import checked_npz_bytes, read_checked_npz, write_bytes_atomically
from .datasets import cache_dir, load

log = logging.getLogger("tinyflux.data")

# The 8 directions: (rows, columns) the digit moves per frame; rows grow downwards, as in an image.
DIRECTIONS = {"right": (0, 1), "down-right": (1, 1), "down": (1, 0), "down-left": (1, -1),
              "left": (0, -1), "up-left": (-1, -1), "up": (-1, 0), "up-right": (-1, 1)}
# The 80 classes: label = 8 * digit + direction index,
# so label 0 is "0 right" and 79 is "9 up-right".
CLASSES = [f"{digit} {direction}" for digit in range(10) for direction in DIRECTIONS]
# part of the cache file name: change it when make_clips changes, so old files are not reused
CLIP_FORMAT = 4
# (4: the cache file carries the SHA-256 of its clips and labels)


def make_clips(digits: np.ndarray, digit_labels: np.ndarray, count: int, frames: int, size: int,
               rng: np.random.Generator):
    """``count`` clips uint8 (count, frames, size, size)
    of digits sliding 1 pixel per frame, and labels.

    Each clip shrinks a random digit to 14x14 (the mean of each 2x2 block) and draws it on a black
    frame at a random start, then one step further in a random direction at every frame; the start
    keeps the digit inside until the last frame. The label is 8 * digit + the direction's index.
    """
    steps = np.array(list(DIRECTIONS.values()))  # (8, 2): rows and columns per frame
    directions = rng.integers(0, len(steps), count)
    chosen = rng.choice(len(digits), count, replace=count > len(digits))
    labels = (len(steps) * digit_labels[chosen].astype(np.int64) + directions).astype(np.uint8)
    picked = digits[chosen]  # (count, 28, 28)
    # -> (count, 14, 2, 14, 2)
    blocks = picked.reshape(count, picked.shape[1] // 2, 2, picked.shape[2] // 2, 2)
    # (count, 14, 2, 14, 2) -> (count, 14, 14)
    small = blocks.mean(axis=(2, 4)).round().astype(np.uint8)
    room = size - small.shape[1]  # the largest top-left position that keeps the digit inside
    # (count, 2): how far each clip moves in rows and columns
    travel = steps[directions] * (frames - 1)
    starts = rng.integers(np.maximum(0, -travel), room - np.maximum(0, travel) + 1)  # (count, 2)
    clips = np.zeros((count, frames, size, size), dtype=np.uint8)
    for i in range(count):
        for t in range(frames):
            row, col = starts[i] + steps[directions[i]] * t
            clips[i, t, row:row + small.shape[1], col:col + small.shape[2]] = small[i]
    return clips, labels


def clips(split: str, count: int, frames: int = 16, size: int = 32, dataset: str = "mnist",
          root=None, seed: int = 0):
    """``count`` clips of one split, uint8 (count, frames, size, size), and labels: from the cache,
    else made from the dataset's digits of that split and cached.

    Training clips come from training digits and test clips from test digits, with
    other random motions, so the test measures digits and starts the model has never seen.
    """
    name = f"v{CLIP_FORMAT}-{dataset}-{split}-{count}x{frames}x{size}x{size}-seed{seed}.npz"
    path = cache_dir("moving-digits") / name
    try:
        return read_checked_npz(path, "clips", "labels")
    except FileNotFoundError:
        pass
    except ValueError as error:  # ChecksumError included
        log.warning("%s: damaged cached clips (%s); making them again", path, error)
    log.info(f"Making {count} {split} clips of {frames} frames of {size}x{size} (cached in {path})")
    digits, digit_labels = load(dataset, split, root=root)
    seed = seed if split == "train" else seed + 1
    rng = np.random.default_rng(seed)
    made, labels = make_clips(digits, digit_labels, count, frames, size, rng)
    write_bytes_atomically(path, checked_npz_bytes("clips", made, labels=labels))
    return made, labels
