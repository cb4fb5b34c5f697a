"""Checkpoints: parameters, optimizer state and metadata in one HDF5 file.

Layout of a checkpoint file (arrays and plain attributes only, never pickle,
so a checkpoint cannot run code when it is opened and other tools can read it):

    /                   attrs: format, tinyflux_version, model (its repr)
    /parameters/<name>  one dataset per parameter, named as model.named_parameters() says
                        ("0.weight", ...)
    /buffers/<name>     one per buffer (BatchNorm's running statistics...), when the model has any
    /optimizer          attrs: type, lr, t, and the rest of its hyperparameters (betas, eps...);
                        one subgroup per state kind ("m", "v") with one dataset per parameter name
    /metadata           attrs: whatever was passed as keyword arguments (epoch, accuracy, lr...)

Every dataset carries the SHA-256 of its bytes as an attribute, and every
group with attributes (the file's root, /optimizer, /metadata) carries one
over its attributes, ``attributes_sha256``, so damage that HDF5 itself
cannot see (a flipped bit inside a weight, one digit changed in a saved
learning rate or random generator state) is found on loading instead of
silently changing the model or a resumed run.

Saving is all or nothing. The whole HDF5 file is first built in memory;
its bytes are then written with plain file I/O under a temporary name in the
same folder, forced to disk and renamed over the target (``files.py``). A
failure at any point (disk full, read-only folder, a name too long) raises
:class:`CheckpointError` naming the file and the cause, and leaves the
previous checkpoint as it was. Writing the bytes ourselves, rather than
letting HDF5 write to disk, keeps a failed write from leaving HDF5's library
with a broken open file, which otherwise crashes the process when it exits.

Loading reads and checks everything first (every name, shape, dtype,
checksum and optimizer attribute) and lists every problem at once; only a
file that passes all checks changes the model and the optimizer.

A checkpoint may come from anyone, so loading reads nothing from outside
the file. HDF5 can point elsewhere in three ways, and each is refused before
anything is read: a link to another file (or a soft link by name), a dataset
whose bytes are kept in an external raw file ("external storage": a crafted
file could name any file of the machine and have it read into the weights),
and a virtual dataset assembled from other files. Datasets must hold numbers.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import numbers
import os
from pathlib import Path

import h5py
import numpy as np

from .backends import get_array_module, to_cpu_array
from .files import deferred_interrupt, remove_stale_parts, write_bytes_atomically
from .version import __version__

# 3: checksums over the attributes too; 2: over the arrays, every hyperparameter
FORMAT = "tinyflux-checkpoint-3"
ARRAY_CHECKSUMS = (FORMAT, "tinyflux-checkpoint-2")  # the formats whose arrays carry a SHA-256
# still loaded, with the checks they allow
OLDER_FORMATS = ("tinyflux-checkpoint-2", "tinyflux-checkpoint-1")
ATTRIBUTES_SHA256 = "attributes_sha256"


log = logging.getLogger("tinyflux")


class CheckpointError(Exception):
    """A checkpoint file cannot be read, or does not fit the model/optimizer it is loaded into."""


def _plain(value, key: str):
    """Metadata must be numbers, strings or booleans (or
    small arrays of them): HDF5 attributes, no pickle."""
    if isinstance(value, (bool, np.bool_, numbers.Number, str, np.generic)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        # HDF5 has no NumPy unicode arrays: its own strings
        return np.array(value, dtype=h5py.string_dtype())
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Number) for v in value):
        return np.asarray(value)
    raise TypeError(f"save: metadata {key}={value!r} is a {type(value).__name__}; only numbers, "
                    "strings, booleans and lists of numbers or of strings can be stored")


def _python(value):
    """HDF5 attribute -> plain Python value for the metadata dict."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _attributes_digest(attrs) -> str:
    """SHA-256 of a group's attributes (all but the digest
    itself), as the plain values they read back as."""
    values = {key: _python(value) for key, value in attrs.items() if key != ATTRIBUTES_SHA256}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=repr).encode()).hexdigest()


def _seal(attrs) -> None:
    attrs[ATTRIBUTES_SHA256] = _attributes_digest(attrs)


def _attributes_intact(attrs) -> bool:
    return _python(attrs.get(ATTRIBUTES_SHA256)) == _attributes_digest(attrs)


def _add_dataset(group, name: str, array) -> None:
    array = to_cpu_array(array)
    group.create_dataset(name, data=array).attrs["sha256"] = _sha256(array)


def _parameter_names(model, optimizer, what: str) -> dict:
    """id(parameter) -> its name in the model; the
    optimizer must hold the model's own parameters."""
    names = {id(p): name for name, p in model.named_parameters()}
    if optimizer is not None:
        foreign = [i for i, p in enumerate(optimizer.params) if id(p) not in names]
        if foreign:
            raise ValueError(f"{what}: the optimizer's parameters {foreign} are not parameters of "
                             "this model; build the optimizer from this model's parameters "
                             "(optim.Adam(model.parameters()))")
    return names


def _check_arguments(what: str, path, model, optimizer) -> Path:
    """The path, expanded (``~``); a TypeError naming
    what came instead of a path, a model or an optimizer."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what}: the first argument is the file's path, got a "
                        f"{type(path).__name__}; the call is tf.{what}(path, model, optimizer)")
    if not hasattr(model, "named_parameters"):
        raise TypeError(f"{what}: a model (an nn.Module) expected as the second argument, got a "
                        f"{type(model).__name__}")
    if optimizer is not None and not hasattr(optimizer, "hyperparameters"):
        raise TypeError(f"{what}: an optimizer object (optim.Adam(model.parameters()), ...) or "
                        f"None expected, got {type(optimizer).__name__} {optimizer!r:.40}")
    return Path(path).expanduser()


def _warn_if_nan(model, path, doing: str) -> None:
    """Weights with NaN are kept as they are (they may
    be what one wants to look at), but never silently."""
    bad = [name for name, p in [*model.named_parameters(), *model.named_buffers()]
           if p.data.dtype.kind == "f"
           and not bool(get_array_module(p.data).isfinite(p.data).all())]
    if bad:
        log.warning("%s: %s parameters or statistics holding NaN or infinity: %s "
                    "(the training diverged?)", path, doing, ", ".join(bad))


def checkpoint_bytes(model, optimizer=None, /, **metadata) -> bytes:
    """The complete HDF5 file that :func:`save` writes,
    as bytes (built in memory, nothing on disk)."""
    # fail before building anything
    metadata = {key: _plain(value, key) for key, value in metadata.items()}
    names = _parameter_names(model, optimizer, "save")
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["tinyflux_version"] = __version__
        f.attrs["model"] = repr(model)
        _seal(f.attrs)
        params = f.create_group("parameters")
        for name, p in model.named_parameters():
            _add_dataset(params, name, p.data)
        buffers = dict(model.named_buffers())
        if buffers:  # running statistics, counters: what the layers keep besides their parameters
            group = f.create_group("buffers")
            for name, buffer in buffers.items():
                _add_dataset(group, name, buffer.data)
        if optimizer is not None:
            group = f.create_group("optimizer")
            for key, value in optimizer.hyperparameters().items():
                group.attrs[key] = value
            _seal(group.attrs)
            for kind, arrays in optimizer.state_arrays().items():
                sub = group.create_group(kind)
                for p, array in zip(optimizer.params, arrays):
                    if array is not None:
                        _add_dataset(sub, names[id(p)], array)
        meta = f.create_group("metadata")
        for key, value in metadata.items():
            meta.attrs[key] = value
        _seal(meta.attrs)
    return image.getvalue()


def save(path, model, optimizer=None, /, **metadata) -> None:
    """Write the model's parameters (and the optimizer's
    state, if given) to ``path``, all or nothing.

    Args:
        path: the .h5 file to create or replace.
        model: a Module; its ``named_parameters()`` give the dataset names.
        optimizer: optional; saved with every hyperparameter so training can resume exactly.
        metadata: plain values stored as attributes, e.g. ``epoch=3, accuracy=0.99``.

    Raises:
        CheckpointError: the file could not be written; the previous file at ``path`` is unchanged.
    """
    path = _check_arguments("save", path, model, optimizer)
    if path.parent.exists() and not path.parent.is_dir():
        raise CheckpointError(f"{path}: cannot save there: {path.parent} is a file, not a folder")
    try:
        with deferred_interrupt():  # a Ctrl-C comes after the file is whole, never lost inside h5py
            data = checkpoint_bytes(model, optimizer, **metadata)
            _warn_if_nan(model, path, "saving")
            # leftovers of saves that were killed
            remove_stale_parts(path.parent, target_suffix=path.suffix)
            write_bytes_atomically(path, data)
    except OSError as error:
        kind = type(error).__name__
        cause = f"{error.strerror} ({kind})" if error.strerror else f"{kind}: {error}"
        raise CheckpointError(f"{path}: could not save the checkpoint: {cause}; "
                              "any earlier file under that name is unchanged") from error


def load(path, model, optimizer=None) -> dict:
    """Load a checkpoint written by :func:`save` into
    ``model`` (and ``optimizer``); return its metadata.

    Nothing is changed unless every parameter and optimizer state array is
    present with the right shape, dtype and checksum and every optimizer
    attribute is valid; otherwise :class:`CheckpointError` lists every
    problem at once. The optimizer gets back all of its hyperparameters
    (lr, t, and for Adam betas and eps), not only its arrays.
    """
    path = _check_arguments("load", path, model, optimizer)
    names = _parameter_names(model, optimizer, "load")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        f = h5py.File(path, "r")
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied: this "
                              "user may not read the file") from None
    except OSError as error:  # empty, truncated or not HDF5 at all
        raise CheckpointError(f"{path}: not a readable HDF5 checkpoint ({error})") from None
    try:
        with f:
            params, hyper, arrays, metadata = _read_checked(f, path, model, optimizer, names)
    except CheckpointError:
        raise
    # damage h5py found
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint "
                              f"({type(error).__name__}: {error})") from None

    # every check passed: only now change the model and the optimizer
    for name, p in model.named_parameters():
        # in place: keeps Adam's flat buffer
        p.data[...] = get_array_module(p.data).asarray(params[name])
    for name, buffer in model.named_buffers():
        buffer.data[...] = get_array_module(buffer.data).asarray(params[("buffers", name)])
    if optimizer is not None:
        optimizer.load_state(hyper, arrays)
    _warn_if_nan(model, path, "loaded")
    return metadata


def read_metadata(path) -> dict:
    """The metadata saved with a checkpoint (epoch, accuracy...), without loading it into a model.

    Raises CheckpointError when the file is not a tinyflux checkpoint, or when its
    metadata changed after it was saved (its checksum no longer matches).
    """
    path = Path(path).expanduser()
    try:
        with h5py.File(path, "r") as f:
            if _python(f.attrs.get("format")) not in (FORMAT, *OLDER_FORMATS):
                raise CheckpointError(f"{path}: not a tinyflux checkpoint")
            metadata = _member(f, "metadata")
            if metadata is None:
                return {}
            if _python(f.attrs.get("format")) == FORMAT and not _attributes_intact(metadata.attrs):
                raise CheckpointError(f"{path} is damaged: its metadata attributes changed after "
                                      "it was saved (their checksum does not match)")
            return _read_attributes(metadata.attrs)
    except (OSError, KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint "
                              f"({type(error).__name__}: {error})") from None


def _member(group, name: str):
    """``group.get(name)``, but refused unless ``name`` is stored inside this file (a hard link)."""
    if group is None:
        return None
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        target = getattr(link, "filename", "") or ""
        kind = (f"an external link to {target}:{link.path}" if target
                else f"a soft link to {link.path}")
        raise CheckpointError(f"{group.file.filename}: refused: {group.name.rstrip('/')}/{name} "
                              f"is {kind}; a checkpoint reads nothing from outside itself")
    return group.get(name)


def _refuse_foreign_storage(dataset) -> None:
    """Raise unless the dataset's bytes are inside the file and are numbers."""
    where = f"{dataset.file.filename}: refused: {dataset.name}"
    if dataset.is_virtual:
        raise CheckpointError(f"{where} is a virtual dataset (its values come from other files)")
    if dataset.id.get_create_plist().get_external_count():
        raise CheckpointError(f"{where} keeps its bytes in an external file outside the checkpoint")
    if dataset.dtype.kind not in "biuf":
        raise CheckpointError(f"{where} holds {dataset.dtype}, not numbers")


def _read_attributes(attrs) -> dict:
    return {key: _python(value) for key, value in attrs.items() if key != ATTRIBUTES_SHA256}


def _check_group(group, expected: dict, where: str, problems: list, checksums: bool) -> dict:
    """Compare a group's datasets with {name: array}; collect problems, read the arrays that fit."""
    found = {}
    if group is None:
        problems.extend(f"missing {where}/{name}" for name in expected)
        return found
    for name in sorted(set(group) - set(expected)):
        problems.append(f"unexpected {where}/{name}")
    for name, target in expected.items():
        stored = _member(group, name)
        if stored is None:
            problems.append(f"missing {where}/{name}")
            continue
        if not isinstance(stored, h5py.Dataset):
            problems.append(f"mismatched {where}/{name}: a group where an array was expected")
            continue
        if tuple(stored.shape) != tuple(target.shape) or stored.dtype != target.dtype:
            problems.append(f"mismatched {where}/{name}: file has "
                            f"{stored.dtype}{tuple(stored.shape)}, expected "
                            f"{target.dtype}{tuple(target.shape)}")
            continue
        _refuse_foreign_storage(stored)
        value = stored[()]
        if checksums:
            digest = _python(stored.attrs.get("sha256"))
            if digest is None:
                problems.append(f"missing checksum of {where}/{name}")
                continue
            if digest != _sha256(value):
                problems.append(f"checksum mismatch in {where}/{name}: its bytes "
                                "changed after it was saved")
                continue
        found[name] = value
    return found


def _read_checked(f, path, model, optimizer, names: dict):
    """Read everything load() needs and check it; raise CheckpointError listing every problem."""
    file_format = _python(f.attrs.get("format"))
    if file_format != FORMAT and file_format not in OLDER_FORMATS:
        raise CheckpointError(f"{path}: not a tinyflux checkpoint (format "
                              f"attribute {file_format!r})")
    checksums = file_format in ARRAY_CHECKSUMS
    problems: list[str] = []
    if file_format == FORMAT:
        for where, group in (("/", f), ("optimizer", _member(f, "optimizer")),
                             ("metadata", _member(f, "metadata"))):
            if group is not None and not _attributes_intact(group.attrs):
                problems.append(f"checksum mismatch in the attributes of {where}: "
                                "they changed after saving")
    named = dict(model.named_parameters())
    params = _check_group(_member(f, "parameters"), {n: p.data for n, p in named.items()},
                          "parameters", problems, checksums)
    buffers = dict(model.named_buffers())
    if buffers or _member(f, "buffers") is not None:
        expected = {n: b.data for n, b in buffers.items()}
        found = _check_group(_member(f, "buffers"), expected, "buffers", problems, checksums)
        params.update({("buffers", name): value for name, value in found.items()})

    hyper, arrays = {}, {}
    if optimizer is not None:
        group = _member(f, "optimizer")
        if group is None:
            problems.append("missing optimizer (the checkpoint was saved without one)")
        else:
            stored = _read_attributes(group.attrs)
            # "Adam" also for a DataParallel Adam
            expected_type = optimizer.hyperparameters()["type"]
            if stored.get("type") != expected_type:
                problems.append(f"mismatched optimizer: file has {stored.get('type')}, "
                                f"expected {expected_type}")
            else:
                # format 1 did not store every hyperparameter: keep the optimizer's own
                if not checksums:
                    stored = {**optimizer.hyperparameters(), **stored}
                hyper, hyper_problems = optimizer.parse_hyperparameters(stored)
                problems += hyper_problems
            by_name = {names[id(p)]: i for i, p in enumerate(optimizer.params)}
            for kind, state in optimizer.state_arrays().items():
                expected = {names[id(p)]: p.data for p in optimizer.params}
                values = _check_group(_member(group, kind), expected, f"optimizer/{kind}",
                                      problems, checksums)
                arrays[kind] = [None] * len(optimizer.params)
                for name, value in values.items():
                    arrays[kind][by_name[name]] = value
    if problems:
        damaged = any(p.startswith(("checksum", "missing checksum",
                                    "bad optimizer")) for p in problems)
        headline = "is damaged or does not fit the model" if damaged else "does not fit the model"
        raise CheckpointError(f"{path} {headline}:\n  " + "\n  ".join(problems))
    metadata_group = _member(f, "metadata")
    metadata = _read_attributes(metadata_group.attrs) if metadata_group is not None else {}
    return params, hyper, arrays, metadata
