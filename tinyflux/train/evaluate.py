"""Measuring a model, and the small data decisions around training: predictions, accuracy, validation split.

The accuracy of a classifier is the fraction of examples whose highest score
is the true label: mean(argmax_k scores[i, k] == y[i]). It is computed in
chunks under ``no_grad`` (no graph kept, so memory stays small), and with
several ranks each scores its own slice and the counts are summed.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np

from .. import distributed
from ..backends import get_array_module, to_cpu_array
from ..checkpoint import CheckpointError, read_metadata
from ..data import DatasetError, to_float_images
from ..data.batches import check_pixel_type
from ..files import write_file
from ..functional import onecold, softmax
from ..modes import no_grad
from ..tensor import Tensor
from .runs import refuse_to_replace

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


def check_examples(images, labels, what: str = "data") -> None:
    """Refuse, with a plain message, examples that training would fail on or learn nothing from.

    ``images`` must be an array (NumPy, CuPy, an h5py dataset) of uint8 or floats, ``labels`` one
    integer from 0 per example, and there must be at least one example of at least two classes.
    """
    for name, value in (("images", images), ("labels", labels)):
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise TypeError(f"{what}: {name} must be an array (numpy.ndarray, an h5py dataset...), got "
                            f"{type(value).__name__}: np.asarray(...) turns a list into one")
    check_pixel_type(images.dtype)
    if len(images) != len(labels):
        raise DatasetError(f"{what}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DatasetError(f"{what}: no examples")
    if np.dtype(labels.dtype).kind not in "iu":
        raise TypeError(f"{what}: labels must be integers (a class index per example), got {labels.dtype}")
    values = to_cpu_array(labels[()] if type(labels).__module__.startswith("h5py") else labels)
    if values.ndim != 1:
        raise DatasetError(f"{what}: labels must have one axis (N,), got shape {tuple(values.shape)}")
    if values.min() < 0:
        raise DatasetError(f"{what}: labels must be class indices from 0, got {values.min()}")


def check_labels_fit(labels, classes: int, what: str, training: bool) -> None:
    """Refuse labels the model has no output for, and training data of one class."""
    values = to_cpu_array(labels[()] if type(labels).__module__.startswith("h5py") else labels)
    if values.max() >= classes:
        raise DatasetError(f"{what}: label {values.max()} has no output: the model scores {classes} classes "
                           f"(0..{classes - 1})")
    if training and len(np.unique(values)) < 2:
        raise DatasetError(f"{what}: every label is {values[0]}: with one class there is nothing to learn")


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


def confusion_matrix(predicted, true, classes: int) -> np.ndarray:
    """counts[i, j]: how many examples of class i were predicted as class j (rows: the truth)."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (to_cpu_array(true).astype(np.int64), to_cpu_array(predicted).astype(np.int64)), 1)
    return counts


def class_report(counts: np.ndarray, names: list[str]) -> list[str]:
    """Lines for the log: each class's accuracy (its diagonal count over its row), then the matrix itself."""
    width = max(len("true/predicted"), *(len(name) for name in names))
    lines = [f"{name:>{width}}: {counts[i, i] / max(counts[i].sum(), 1):.4f} of {counts[i].sum()}"
             for i, name in enumerate(names)]
    corner = "true/predicted"
    lines.append(f"{corner:>{width}}  " + " ".join(f"{name[:5]:>5}" for name in names))
    lines += [f"{name:>{width}}  " + " ".join(f"{n:>5}" for n in row) for name, row in zip(names, counts)]
    return lines


def clip_model_metadata(path) -> dict:
    """The metadata of a model saved by a run on colour clips (input (3, T, H, W), class names), for prediction;
    CheckpointError naming what the file holds otherwise (an image model, generated grey clips...)."""
    saved = read_metadata(path)
    shape, classes = saved.get("input_shape", []), saved.get("classes")
    if len(shape) != 4 or shape[0] != 3 or not classes:
        raise CheckpointError(f"{path}: a model for input {tuple(shape) or 'of unknown shape'}"
                              f"{'' if classes else ' without class names'}; --predict needs one trained on colour "
                              "clips (video_conv.py --video-dir)")
    return {"network": "small", "augment": False, **saved}


def classify_clips(model, path, decoded: tuple[int, int], classes: list[str], view=None, top: int = 3) -> list:
    """[(clip, [(class, probability), ...]), ...]: the ``top`` classes of the clip ``path``, or of every clip in
    the folder ``path`` (a folder of frames counts as one clip), each decoded at ``decoded`` (frames, size)."""
    from ..data import video
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"--predict: {path} does not exist")
    if not (path.is_file() or path.is_dir()):
        raise DatasetError(f"--predict: {path} is neither a video file nor a folder of clips or frames "
                           "(a pipe or a device?)")
    clips = [path] if path.is_file() or video.is_frame_folder(path) else video.clip_files(path)
    rows = []
    for clip in clips:
        x = video.decode_clip(clip, decoded[0], (decoded[1], decoded[1]))[None]  # (1, 3, T, H, W)
        x = view(x) if view else x
        with no_grad():
            probabilities = to_cpu_array(softmax(model.eval()(Tensor(to_float_images(x)))).data[0])  # (classes,)
        rows.append((str(clip), [(classes[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:top]]))
    return rows


def show_ranked(rows: list, out=None) -> list:
    """Print ``classify_clips``' rows, one line per clip, and write them to the CSV file ``out`` when given;
    returns the rows."""
    top = max((len(ranked) for _, ranked in rows), default=0)
    for clip, ranked in rows:
        print(f"{clip}: " + ", ".join(f"{name} {probability:.4f}" for name, probability in ranked))
    if out:
        write_csv(out, ["clip", *(f"{kind}{i + 1}" for i in range(top) for kind in ("class", "p"))],
                  [[clip, *(value for pair in ranked for value in pair)] for clip, ranked in rows])
    return rows


def write_csv(path, header: list, rows: list) -> None:
    """A new CSV file, written whole or not at all; an existing file is never replaced."""
    refuse_to_replace(path, "--out")
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    write_file(path, buffer.getvalue().encode(), "CSV file")
