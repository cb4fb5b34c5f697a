"""Predicting with a trained clip model: its classes for
a clip or a folder of clips, printed or as a CSV file.

The model gives one score per class; softmax turns them into probabilities,
p_k = exp(s_k) / sum_j exp(s_j), and the ``top`` largest are reported per clip.
A folder is a folder of clips (video files, folders of frames) unless it is
itself one clip's frames. The CSV file is written whole or not at all, and
never over an existing file. ``examples/video_conv.py --predict`` is built on it.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .backends import to_cpu_array
from .checkpoint import CheckpointError, read_metadata
from .data import DatasetError, to_float_images, video
from .device import on_model_device
from .files import write_file
from .functional import softmax
from .modes import no_grad
from .tensor import Tensor
from .train.runs import refuse_to_replace


def clip_model_metadata(path) -> dict:
    """The metadata of a model saved by a run on colour clips (input (3, T, H, W), class names), for
    prediction; CheckpointError naming what the file holds otherwise (an image model, generated grey
    clips...). What else the run saved (its network, its augmentation) is the program's to read."""
    saved = read_metadata(path)
    shape, classes = saved.get("input_shape", []), saved.get("classes")
    if len(shape) != 4 or shape[0] != 3 or not classes:
        raise CheckpointError(f"{path}: a model for input {tuple(shape) or 'of unknown shape'}"
                              f"{'' if classes else ' without class names'}; --predict needs one "
                              "trained on colour "
                              "clips (video_conv.py --video-dir)")
    return saved


def classify_clips(model, path, decoded: tuple[int, int], classes: list[str], view=None,
                   top: int = 3) -> list:
    """[(clip, [(class, probability), ...]), ...]: the ``top`` classes of
    the clip ``path``, or of every clip in the folder ``path`` (a folder of
    frames counts as one clip), each decoded at ``decoded`` (frames, size)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"--predict: {path} does not exist")
    if not (path.is_file() or path.is_dir()):
        raise DatasetError(f"--predict: {path} is neither a video file nor a folder of clips or "
                           "frames (a pipe or a device?)")
    clips = [path] if path.is_file() or video.is_frame_folder(path) else video.clip_files(path)
    rows = []
    for clip in clips:
        x = video.decode_clip(clip, decoded[0], (decoded[1], decoded[1]))[None]  # (1, 3, T, H, W)
        x = on_model_device(view(x) if view else x, model)
        with no_grad():
            # (classes,)
            probabilities = to_cpu_array(softmax(model.eval()(Tensor(to_float_images(x)))).data[0])
        rows.append((str(clip),
                     [(classes[i],
                       float(probabilities[i])) for i in np.argsort(-probabilities)[:top]]))
    return rows


def show_ranked(rows: list, out=None) -> list:
    """Print ``classify_clips``' rows, one line per clip, and write
    them to the CSV file ``out`` when given; returns the rows."""
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
