"""Parameters as safetensors files: tinyflux's own
(``save``, ``load``) and PyTorch's (``load_state_dict``).

safetensors is the plain format that PyTorch, JAX and tinygrad users share
weights in: a small JSON header (each tensor's name, dtype, shape and byte
range) and then the raw bytes; it holds nothing that runs code when read.
``tf.safetensors.save(path, model)`` writes every parameter and every buffer
(batch normalisation's running statistics) under its tinyflux name
("0.weight", "1.running_mean"), and ``load`` reads them back bit for bit: a
model loaded without its statistics would predict with the ones it started with.

**PyTorch weights.** A PyTorch ``state_dict`` uses the same layouts as
tinyflux: convolution kernels (out, in, *kernel), cross-correlation, C-order
flattening, dense weights (out, in). Only the names differ: in
``nn.Sequential`` every ReLU is a module of its own, so PyTorch's "3.weight"
can be tinyflux's "2.weight". :func:`load_state_dict` therefore matches the
two by *module order and shape*: PyTorch's weights and biases against
``model.named_parameters()``, its ``running_mean`` and ``running_var``
against ``model.named_buffers()`` (its counters ``num_batches_tracked`` are
left out). A difference in count or in any shape is refused with both lists
side by side.

A safetensors file does not keep the order of its tensors (the library
stores them sorted by name), so module order can be read off the names only
where every module name is a number, as in ``nn.Sequential`` ("3.weight",
the numbers read as numbers). With names like "encoder.0.weight" and
"decoder.0.weight", sorting would put the decoder first and, where the shapes
agree, load each into the other's layers without any error. Such a file is
refused unless the order comes with it: ``order=list(torch_model.state_dict())``,
or, instead of the file, the ``state_dict`` itself as NumPy arrays (a dict keeps
its order). Save a PyTorch model's weights with
``safetensors.torch.save_file(model.state_dict(), "weights.safetensors")``.

safetensors is an optional extra: ``pip install 'tinyflux[onnx]'`` brings it with onnx.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .backends import get_array_module, to_cpu_array
from .files import write_file

MISSING = ("safetensors files need the safetensors package, an optional extra: pip "
           "install 'tinyflux[onnx]'")
STATISTICS = ("running_mean", "running_var")  # PyTorch's buffers that tinyflux's BatchNorm has too
COUNTERS = ("num_batches_tracked",)  # PyTorch's buffers that tinyflux has no use for


def _numpy_api():
    try:
        import safetensors.numpy as api
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None
    return api


def _named_state(model) -> list:
    """(name, tensor) of every parameter, then of every buffer."""
    return list(model.named_parameters()) + list(model.named_buffers())


def save(path, model) -> str:
    """Write every parameter and buffer of ``model`` to
    ``path`` under its tinyflux name; returns the path."""
    api = _numpy_api()
    arrays = {name: np.ascontiguousarray(to_cpu_array(t.data)) for name, t in _named_state(model)}
    write_file(path, api.save(arrays, metadata={"format": "tinyflux"}), "safetensors file")
    return str(path)


def _bfloat16_as_float32(data: bytes) -> dict:
    """The tensors of a safetensors file holding bfloat16, which NumPy has no type for, as float32.

    bfloat16 is the upper half of a float32 (sign, the same 8 exponent bits, 7 of the 23 mantissa
    bits), so shifting its 16 bits up gives the float32 of exactly the same value.
    """
    # the file: 8 bytes of header length, the JSON header, data
    length = int(np.frombuffer(data[:8], "<u8")[0])
    header, body = json.loads(data[8:8 + length]), memoryview(data)[8 + length:]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = body[begin:end]
        if entry["dtype"] == "BF16":
            upper = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            arrays[name] = upper.view(np.float32).reshape(entry["shape"])
        else:
            arrays[name] = np.frombuffer(raw,
                                         NUMPY_TYPES[entry["dtype"]]).reshape(entry["shape"]).copy()
    return arrays


NUMPY_TYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
               "I8": "i1", "U8": "u1", "BOOL": "?"}


def _read(path) -> dict:
    api = _numpy_api()
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    data = path.read_bytes()
    try:
        return api.load(data)
    except Exception as error:  # the library's own error types vary with its version
        if b'"BF16"' in data[:8 + 2**20]:
            try:
                return _bfloat16_as_float32(data)
            except (ValueError, KeyError, TypeError):
                pass
        raise ValueError(f"{path}: not a readable safetensors file "
                         f"({type(error).__name__}: {error})") from None


def _warn_if_not_finite(path, arrays: dict) -> None:
    bad = [name for name, array in arrays.items()
           if array.dtype.kind == "f" and not np.isfinite(array).all()]
    if bad:
        warnings.warn(f"{path}: NaN or infinity in {', '.join(bad)}; the model gives "
                      "NaN wherever they are used", RuntimeWarning, stacklevel=3)


def _copy_into(targets: list, arrays: list) -> None:
    for tensor, array in zip(targets, arrays):
        # In place, so that an optimiser holding this array keeps seeing the model's weights.
        tensor.data[...] = get_array_module(tensor.data).asarray(array.astype(tensor.data.dtype))


def load(path, model) -> None:
    """Put the parameters and buffers saved by :func:`save`
    back into ``model``, by name; all or nothing.

    A file from before buffers were saved holds parameters only: it loads with a warning
    that the running statistics keep the values they have.
    """
    arrays = _read(path)
    named = dict(_named_state(model))
    buffers = [name for name, _ in model.named_buffers()]
    if buffers and not set(buffers) & set(arrays):
        warnings.warn(f"{path} holds no running statistics (saved by an older tinyflux): "
                      f"{', '.join(buffers)} keep the values they have now", stacklevel=2)
        named = {name: t for name, t in named.items() if name not in buffers}
    problems = [f"missing {name}" for name in named if name not in arrays]
    problems += [f"unexpected {name}" for name in arrays if name not in named]
    problems += [f"{name}: file {arrays[name].dtype}{arrays[name].shape}, "
                 f"model {t.data.dtype}{tuple(t.shape)}"
                 for name, t in named.items() if name in arrays and
                 (arrays[name].shape != tuple(t.shape) or arrays[name].dtype != t.data.dtype)]
    if problems:
        raise ValueError(f"{path} does not fit the model:\n  " + "\n  ".join(problems))
    _warn_if_not_finite(path, {name: arrays[name] for name in named})
    _copy_into(list(named.values()), [arrays[name] for name in named])


def _module_order(name: str) -> tuple:
    """Sort key of a name whose module path is numbers:
    those numbers, then weight, bias, statistics."""
    module, _, kind = name.rpartition(".")
    numbers = tuple(int(part) for part in module.split(".")) if module else ()
    return numbers, {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}.get(kind, 4), kind


def _in_module_order(path, names: list, order) -> list:
    if order is not None:
        order = [name for name in order if name in set(names)]
        missing = [name for name in names if name not in set(order)]
        if missing:
            raise ValueError(f"{path}: order= does not name {', '.join(missing)}")
        return order
    worded = sorted(name for name in names
                    if not all(part.isdigit() for part in name.split(".")[:-1]))
    if worded:
        raise ValueError(f"{path}: a safetensors file does not keep the order of PyTorch's "
                         "modules, and names with words in them "
                         f"({', '.join(worded[:3])}{', ...' if len(worded) > 3 else ''}) cannot "
                         "be put in that order by sorting (\"decoder\" would come before "
                         "\"encoder\"). Give the order: load_state_dict(model, path, "
                         "order=list(torch_model.state_dict())), or pass the state_dict itself: "
                         "{name: t.numpy() for name, t in torch_model.state_dict().items()}")
    return sorted(names, key=_module_order)


def _side_by_side(theirs: list, ours: list):
    for i in range(max(len(theirs), len(ours))):
        yield (theirs[i] if i < len(theirs) else None), (ours[i] if i < len(ours) else (None, None))


def _refuse_unless_matched(path, kind: str, theirs: list, arrays: dict, ours: list) -> None:
    if len(theirs) == len(ours) and all(arrays[t].shape == tuple(p.shape)
                                        for t, (_, p) in zip(theirs, ours)):
        return
    rows = [f"  {t if t else '-':24} {str(arrays[t].shape) if t else '':18} | {o or '-':16} "
            f"{str(tuple(p.shape)) if o else ''}"
            for t, (o, p) in _side_by_side(theirs, ours)]
    raise ValueError(f"{path}: the state_dict does not fit the model by order and shape "
                     f"({len(theirs)} {kind} against {len(ours)}):\n"
                     f"  {'PyTorch':24} {'shape':18} | {'tinyflux':16} shape\n" + "\n".join(rows))


def load_state_dict(model, source, order=None) -> list[tuple[str, str]]:
    """Put a PyTorch ``state_dict`` into ``model``, matched by module order and shape.

    ``source``: a safetensors file, or a mapping from names to arrays in module order (a
    ``state_dict`` as NumPy arrays). ``order``: the names in module order, for a file whose
    module names are not all numbers. Returns the pairs (PyTorch name, tinyflux name) matched,
    weights and biases first, then running statistics. Nothing changes unless every count
    and shape matches; otherwise ValueError lists both sides.
    """
    if isinstance(source, Mapping):
        path = "the state_dict"
        arrays = {name: np.asarray(to_cpu_array(a)) for name, a in source.items()}
        order = list(arrays) if order is None else order
    else:
        path, arrays = source, _read(source)
    names = _in_module_order(path, [name for name in arrays if not name.endswith(COUNTERS)], order)
    their_weights = [name for name in names if not name.endswith(STATISTICS)]
    their_statistics = [name for name in names if name.endswith(STATISTICS)]
    our_weights, our_buffers = list(model.named_parameters()), list(model.named_buffers())
    _refuse_unless_matched(path, "weights and biases", their_weights, arrays, our_weights)
    _refuse_unless_matched(path, "running statistics", their_statistics, arrays, our_buffers)
    theirs, ours = their_weights + their_statistics, our_weights + our_buffers
    _warn_if_not_finite(path, {name: arrays[name] for name in theirs})
    _copy_into([t for _, t in ours], [arrays[name] for name in theirs])
    return [(t, o) for t, (o, _) in zip(theirs, ours)]


__all__ = ["MISSING", "load", "load_state_dict", "save"]
