"""Checkpoints: parameters, optimizer state and metadata in one HDF5 file.

Layout of a checkpoint file (arrays and plain attributes only, never pickle,
so a checkpoint cannot run code when it is opened and other tools can read it):

    /                   attrs: format, tinyflux_version, model (its repr)
    /parameters/<name>  one dataset per parameter, named as model.named_parameters() says ("0.weight", ...)
    /optimizer          attrs: type, lr, t, betas...; one subgroup per state kind ("m", "v") with
                        one dataset per parameter name
    /metadata           attrs: whatever was passed as keyword arguments (epoch, accuracy, lr...)

Saving is atomic: the file is written under a temporary name in the same
folder, flushed to disk, then renamed over the target with ``os.replace``
(atomic on POSIX and Windows), so a crash mid-save leaves the previous
checkpoint intact and never a half-written file under the real name.
Loading checks every name, shape and dtype before it changes the model.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import h5py
import numpy as np

from . import __version__, backend
from .files import atomic_path

FORMAT = "tinyflux-checkpoint-1"


class CheckpointError(Exception):
    """A checkpoint file cannot be read, or does not fit the model/optimizer it is loaded into."""


def _plain(value, key: str):
    """Metadata must be numbers, strings or booleans (or small arrays of them): HDF5 attributes, no pickle."""
    if isinstance(value, (bool, np.bool_, numbers.Number, str, np.generic)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (numbers.Number, str)) for v in value):
        return np.asarray(value)
    raise TypeError(f"save: metadata {key}={value!r} is a {type(value).__name__}; "
                    "only numbers, strings, booleans and lists of them can be stored")


def _python(value):
    """HDF5 attribute -> plain Python value for the metadata dict."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save(path, model, optimizer=None, /, **metadata) -> None:
    """Write the model's parameters (and the optimizer's state, if given) to ``path`` atomically.

    Args:
        path: the .h5 file to create or replace.
        model: a Module; its ``named_parameters()`` give the dataset names.
        optimizer: optional; saved so training can resume exactly.
        metadata: plain values stored as attributes, e.g. ``epoch=3, accuracy=0.99``.
    """
    path = Path(path)
    metadata = {key: _plain(value, key) for key, value in metadata.items()}  # fail before writing anything
    names = {id(p): name for name, p in model.named_parameters()}
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["tinyflux_version"] = __version__
        f.attrs["model"] = repr(model)
        params = f.create_group("parameters")
        for name, p in model.named_parameters():
            params.create_dataset(name, data=backend.to_cpu_array(p.data))
        if optimizer is not None:
            group = f.create_group("optimizer")
            for key, value in optimizer.hyperparameters().items():
                group.attrs[key] = value
            for kind, arrays in optimizer.state_arrays().items():
                sub = group.create_group(kind)
                for p, array in zip(optimizer.params, arrays):
                    if array is not None:
                        sub.create_dataset(names[id(p)], data=backend.to_cpu_array(array))
        meta = f.create_group("metadata")
        for key, value in metadata.items():
            meta.attrs[key] = value


def load(path, model, optimizer=None) -> dict:
    """Load a checkpoint written by :func:`save` into ``model`` (and ``optimizer``); return its metadata.

    Nothing is changed unless every parameter (and optimizer state array) is
    present with the right shape and dtype; otherwise :class:`CheckpointError`
    lists every missing, unexpected and mismatched entry at once.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        f = h5py.File(path, "r")
    except OSError as error:  # empty, truncated or not HDF5 at all
        raise CheckpointError(f"{path}: not a readable HDF5 checkpoint ({error})") from None
    try:
        with f:
            return _load_open_file(f, path, model, optimizer)
    except (OSError, KeyError) as error:  # damage found while reading datasets
        raise CheckpointError(f"{path}: damaged checkpoint ({error})") from None


def _check_group(group, expected: dict, where: str, problems: list) -> dict:
    """Compare a group's datasets with {name: array}; collect problems, read the arrays that fit."""
    found = {}
    if group is None:
        problems.extend(f"missing {where}/{name}" for name in expected)
        return found
    for name in sorted(set(group) - set(expected)):
        problems.append(f"unexpected {where}/{name}")
    for name, target in expected.items():
        if name not in group:
            problems.append(f"missing {where}/{name}")
            continue
        stored = group[name]
        if tuple(stored.shape) != tuple(target.shape) or stored.dtype != target.dtype:
            problems.append(f"mismatched {where}/{name}: file has {stored.dtype}{tuple(stored.shape)}, "
                            f"expected {target.dtype}{tuple(target.shape)}")
            continue
        found[name] = stored[()]
    return found


def _load_open_file(f, path, model, optimizer) -> dict:
    if f.attrs.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinyflux checkpoint (format attribute {f.attrs.get('format')!r})")
    problems: list[str] = []
    named = dict(model.named_parameters())
    params = _check_group(f.get("parameters"), {n: p.data for n, p in named.items()}, "parameters", problems)

    optimizer_arrays: dict[str, dict] = {}
    if optimizer is not None:
        group = f.get("optimizer")
        if group is None:
            problems.append("missing optimizer (the checkpoint was saved without one)")
        else:
            stored_type = _python(group.attrs.get("type"))
            if stored_type != type(optimizer).__name__:
                problems.append(f"mismatched optimizer: file has {stored_type}, expected {type(optimizer).__name__}")
            names = {id(p): n for n, p in named.items()}
            for kind, arrays in optimizer.state_arrays().items():
                expected = {names[id(p)]: p.data for p, a in zip(optimizer.params, arrays)}
                optimizer_arrays[kind] = _check_group(group.get(kind), expected, f"optimizer/{kind}", problems)
    if problems:
        raise CheckpointError(f"{path} does not fit the model:\n  " + "\n  ".join(problems))

    # every check passed: only now change the model and the optimizer
    for name, p in named.items():
        p.data[...] = backend.get_array_module(p.data).asarray(params[name])  # in place: keeps Adam's flat buffer
    if optimizer is not None:
        hyper = {key: _python(value) for key, value in f["optimizer"].attrs.items()}
        by_name = {names[id(p)]: i for i, p in enumerate(optimizer.params)}
        arrays = {kind: [None] * len(optimizer.params) for kind in optimizer_arrays}
        for kind, values in optimizer_arrays.items():
            for name, value in values.items():
                arrays[kind][by_name[name]] = value
        optimizer.load_state(hyper, arrays)
    return {key: _python(value) for key, value in f["metadata"].attrs.items()} if "metadata" in f else {}
