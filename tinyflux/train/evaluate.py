"""Measuring a model, and the small data decisions around
training: predictions, accuracy, validation split.

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
from ..data.batches import check_pixel_type
from ..functional import onecold
from ..modes import no_grad
from ..tensor import Tensor

log = logging.getLogger("tinyflux.train")

# about a million input values per chunk: 1,337 MNIST images, 64 clips of 16x32x32
EVALUATION_VALUES = 2**20


def predict(images, model):
    """The class with the highest score for each example (uint8 images
    or clips), computed in chunks, in evaluation mode (BatchNorm's
    running statistics, no dropout); the model's mode is put back after."""
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
    """Fraction of examples whose highest score is the
    true label; with ``comm``, over all ranks' slices."""
    comm = comm or distributed.Communicator()
    part = distributed.shard(len(images), comm)  # one process: all of them
    correct = float((predict(images[part],
                             model) == labels[part]).sum()) if part.stop > part.start else 0.0
    correct, count = distributed.sum_over_ranks([correct, part.stop - part.start], comm)
    return correct / count


def any_nan(model) -> bool:
    """True if any parameter holds a NaN (training has diverged)."""
    return any(bool(get_array_module(p.data).isnan(p.data).any()) for p in model.parameters())


def check_examples(images, labels, what: str = "data") -> None:
    """Refuse, with a plain message, examples that training would fail on or learn nothing from.

    ``images`` must be an array (NumPy, CuPy, an h5py dataset) of uint8 or floats, ``labels`` one
    integer from 0 per example, and there must be at least one example of at least two classes.
    """
    for name, value in (("images", images), ("labels", labels)):
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise TypeError(f"{what}: {name} must be an array (numpy.ndarray, an h5py "
                            f"dataset...), got {type(value).__name__}: "
                            "np.asarray(...) turns a list into one")
    check_pixel_type(images.dtype)
    if len(images) != len(labels):
        raise DatasetError(f"{what}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DatasetError(f"{what}: no examples")
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"{what}: labels must be integers (a class index per "
                        f"example), got {labels.dtype}")
    values = to_cpu_array(labels[()] if type(labels).__module__.startswith("h5py") else labels)
    if values.ndim != 1:
        raise DatasetError(f"{what}: labels must have one axis (N,), got "
                           f"shape {tuple(values.shape)}")
    if values.min() < 0:
        raise DatasetError(f"{what}: labels must be class indices from 0, got {values.min()}")


def check_labels_fit(labels, classes: int, what: str, training: bool) -> None:
    """Refuse labels the model has no output for, and training data of one class."""
    values = to_cpu_array(labels[()] if type(labels).__module__.startswith("h5py") else labels)
    if values.max() >= classes:
        raise DatasetError(f"{what}: label {values.max()} has no output: the model scores "
                           f"{classes} classes (0..{classes - 1})")
    if training and len(np.unique(values)) < 2:
        raise DatasetError(f"{what}: every label is {values[0]}: with one class "
                           "there is nothing to learn")


def split_validation(images, labels, fraction: float, seed: int):
    """Hold out ``fraction`` of the examples, a fixed choice
    made from ``seed``: ((train...), (validation...)).

    Both parts keep the examples' original order, so the training batches are
    still consecutive slices, as without a split.
    """
    count = int(round(fraction * len(images)))
    if not 0 < count < len(images):
        raise DatasetError(f"--val-split {fraction}: {count} of {len(images)} examples would be "
                           "held out; both parts need at least one")
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
    return (len(labels) > 1 and labels[0] != labels[-1]
            and bool(np.all(np.diff(labels.astype(np.int64)) >= 0)))


def warn_if_sorted(labels, shuffle: bool) -> None:
    """Warn when training data sorted by class would be
    read in order: every batch would hold one class."""
    if not shuffle and sorted_by_class(labels):
        log.warning("the training examples are sorted by class and are not shuffled: each batch "
                    "holds one class, and the model learns little or nothing. Shuffle them "
                    "(--shuffle, or shuffle=True)")


def confusion_matrix(predicted, true, classes: int) -> np.ndarray:
    """counts[i, j]: how many examples of class i were predicted as class j (rows: the truth)."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts,
              (to_cpu_array(true).astype(np.int64), to_cpu_array(predicted).astype(np.int64)), 1)
    return counts


def class_report(counts: np.ndarray, names: list[str]) -> list[str]:
    """Lines for the log: each class's accuracy (its
    diagonal count over its row), then the matrix itself."""
    width = max(len("true/predicted"), *(len(name) for name in names))
    lines = [f"{name:>{width}}: {counts[i, i] / max(counts[i].sum(), 1):.4f} of {counts[i].sum()}"
             for i, name in enumerate(names)]
    corner = "true/predicted"
    lines.append(f"{corner:>{width}}  " + " ".join(f"{name[:5]:>5}" for name in names))
    lines += [f"{name:>{width}}  " + " ".join(f"{n:>5}" for n in row)
              for name, row in zip(names, counts)]
    return lines
