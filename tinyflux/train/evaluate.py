"""Measuring a model, and the small data decisions around training: predictions, accuracy, validation split.

The accuracy of a classifier is the fraction of examples whose highest score
is the true label: mean(argmax_k scores[i, k] == y[i]). It is computed in
chunks under ``no_grad`` (no graph kept, so memory stays small), and with
several ranks each scores its own slice and the counts are summed.
"""
from __future__ import annotations

import logging

import numpy as np

from .. import distributed
from ..backends import get_array_module, to_cpu_array
from ..data import DatasetError, to_float_images
from ..functional import onecold
from ..modes import no_grad
from ..tensor import Tensor

log = logging.getLogger("tinyflux.train")

EVALUATION_VALUES = 2**20  # about a million input values per chunk: 1,337 MNIST images, 64 clips of 16x32x32


def predict(images, model):
    """The class with the highest score for each example (uint8 images or clips), computed in chunks,
    in evaluation mode (BatchNorm's running statistics, no dropout); the model's mode is put back after."""
    chunk = max(1, EVALUATION_VALUES // int(np.prod(images.shape[1:])))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            labels = [onecold(model(Tensor(to_float_images(images[start:start + chunk]))))
                      for start in range(0, len(images), chunk)]
    finally:
        model.train(was_training)
    return get_array_module(labels[0]).concatenate(labels)


def accuracy(images, labels, model, comm=None) -> float:
    """Fraction of examples whose highest score is the true label; with ``comm``, over all ranks' slices."""
    comm = comm or distributed.Communicator()
    part = distributed.shard(len(images), comm)  # one process: all of them
    correct = float((predict(images[part], model) == labels[part]).sum()) if part.stop > part.start else 0.0
    correct, count = distributed.sum_over_ranks([correct, part.stop - part.start], comm)
    return correct / count


def any_nan(model) -> bool:
    """True if any parameter holds a NaN (training has diverged)."""
    return any(bool(get_array_module(p.data).isnan(p.data).any()) for p in model.parameters())


def split_validation(images, labels, fraction: float, seed: int):
    """Hold out ``fraction`` of the examples, a fixed choice made from ``seed``: ((train...), (validation...)).

    Both parts keep the examples' original order, so the training batches are
    still consecutive slices, as without a split.
    """
    count = int(round(fraction * len(images)))
    if not 0 < count < len(images):
        raise DatasetError(f"--val-split {fraction}: {count} of {len(images)} examples would be held out; "
                           "both parts need at least one")
    order = np.random.default_rng(seed).permutation(len(images))
    xp = get_array_module(images)
    held_out, kept = xp.asarray(np.sort(order[:count])), xp.asarray(np.sort(order[count:]))
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def example_shape(images) -> tuple:
    """One example's (C, *S) as the model sees it: MNIST's uint8 (N, 28, 28) gives (1, 28, 28)."""
    return tuple(int(n) for n in to_float_images(images[:1]).shape[1:])


def sorted_by_class(labels) -> bool:
    """Whether the labels come in class order (0, 0, ..., 1, 1, ...) with more than one class."""
    labels = to_cpu_array(labels)
    return len(labels) > 1 and labels[0] != labels[-1] and bool(np.all(np.diff(labels.astype(np.int64)) >= 0))


def warn_if_sorted(labels, shuffle: bool) -> None:
    """Warn when training data sorted by class would be read in order: every batch would hold one class."""
    if not shuffle and sorted_by_class(labels):
        log.warning("the training examples are sorted by class and are not shuffled: each batch holds one class, "
                    "and the model learns little or nothing. Shuffle them (--shuffle, or shuffle=True)")
