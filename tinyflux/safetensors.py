"""Parameters as safetensors files: tinyflux's own (``save``, ``load``) and PyTorch's (``load_state_dict``).

safetensors is the plain format that PyTorch, JAX and tinygrad users share
weights in: a small JSON header (each tensor's name, dtype, shape and byte
range) and then the raw bytes; it holds nothing that runs code when read.
``tf.safetensors.save(path, model)`` writes every parameter under its
tinyflux name ("0.weight"), and ``load`` reads them back bit for bit.

**PyTorch weights.** A PyTorch ``state_dict`` uses the same layouts as
tinyflux: convolution kernels (out, in, *kernel), cross-correlation, C-order
flattening, dense weights (out, in). Only the names differ: in
``nn.Sequential`` every ReLU is a module of its own, so PyTorch's "3.weight"
can be tinyflux's "2.weight". :func:`load_state_dict` therefore matches the
two by *order and shape*: PyTorch's tensors in module order (the numbers in
their names read as numbers, a module's weight before its bias), batch-norm
statistics and counters left out, against ``model.named_parameters()``. A
difference in count or in any shape is refused with both lists side by side.
Save a PyTorch model's weights with ``safetensors.torch.save_file(
model.state_dict(), "weights.safetensors")``.

safetensors is an optional extra: ``pip install 'tinyflux[onnx]'`` brings it with onnx.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import get_array_module, to_cpu_array
from .files import write_bytes_atomically

MISSING = "safetensors files need the safetensors package, an optional extra: pip install 'tinyflux[onnx]'"
NOT_PARAMETERS = ("running_mean", "running_var", "num_batches_tracked")  # PyTorch buffers, not trained weights


def _numpy_api():
    try:
        import safetensors.numpy as api
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None
    return api


def save(path, model) -> str:
    """Write every parameter of ``model`` to ``path`` under its tinyflux name; returns the path."""
    api = _numpy_api()
    arrays = {name: np.ascontiguousarray(to_cpu_array(p.data)) for name, p in model.named_parameters()}
    write_bytes_atomically(Path(path).expanduser(), api.save(arrays, metadata={"format": "tinyflux"}))
    return str(path)


def _read(path) -> dict:
    api = _numpy_api()
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such safetensors file")
    try:
        return api.load(path.read_bytes())
    except Exception as error:  # the library's own error types vary with its version
        raise ValueError(f"{path}: not a readable safetensors file ({type(error).__name__}: {error})") from None


def _copy_into(model, arrays: list) -> None:
    for (_, p), array in zip(model.named_parameters(), arrays):
        p.data[...] = get_array_module(p.data).asarray(array.astype(p.data.dtype))  # in place: keeps Adam's buffer


def load(path, model) -> None:
    """Put the parameters saved by :func:`save` back into ``model``, by name; all or nothing."""
    arrays = _read(path)
    named = dict(model.named_parameters())
    problems = [f"missing {name}" for name in named if name not in arrays]
    problems += [f"unexpected {name}" for name in arrays if name not in named]
    problems += [f"{name}: file {arrays[name].dtype}{arrays[name].shape}, model {p.data.dtype}{tuple(p.shape)}"
                 for name, p in named.items() if name in arrays and (arrays[name].shape != tuple(p.shape) or
                                                                     arrays[name].dtype != p.data.dtype)]
    if problems:
        raise ValueError(f"{path} does not fit the model:\n  " + "\n  ".join(problems))
    _copy_into(model, [arrays[name] for name in named])


def _module_order(name: str) -> tuple:
    """Sort key: the module path with numbers read as numbers, then the weight before the bias."""
    module, _, kind = name.rpartition(".")
    parts = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in module.split("."))
    return parts, {"weight": 0, "bias": 1}.get(kind, 2), kind


def load_state_dict(model, path) -> list[tuple[str, str]]:
    """Put a PyTorch ``state_dict`` saved as safetensors into ``model``, matched by order and shape.

    Returns the pairs (PyTorch name, tinyflux name) that were matched. Nothing is changed
    unless every shape matches; otherwise ValueError lists both sides.
    """
    arrays = _read(path)
    theirs = sorted((name for name in arrays if not name.endswith(NOT_PARAMETERS)), key=_module_order)
    ours = list(model.named_parameters())
    fits = len(theirs) == len(ours) and all(arrays[t].shape == tuple(p.shape) for t, (_, p) in zip(theirs, ours))
    if not fits:
        rows = [f"  {t if t else '-':24} {str(arrays[t].shape) if t else '':18} | {o or '-':12} "
                f"{str(tuple(p.shape)) if o else ''}"
                for t, (o, p) in _side_by_side(theirs, ours)]
        raise ValueError(f"{path}: the state_dict does not fit the model by order and shape "
                         f"({len(theirs)} tensors against {len(ours)} parameters):\n"
                         f"  {'PyTorch':24} {'shape':18} | {'tinyflux':12} shape\n" + "\n".join(rows))
    _copy_into(model, [arrays[name] for name in theirs])
    return [(t, o) for t, (o, _) in zip(theirs, ours)]


def _side_by_side(theirs: list, ours: list):
    for i in range(max(len(theirs), len(ours))):
        yield (theirs[i] if i < len(theirs) else None), (ours[i] if i < len(ours) else (None, None))


__all__ = ["MISSING", "load", "load_state_dict", "save"]
