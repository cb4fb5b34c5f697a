"""Moving arrays, Tensors and models between the CPU (NumPy) and a GPU (CuPy or dpnp), like Flux's gpu/cpu.

``model = tf.gpu(model)`` moves a model's parameters onto the GPU (in place,
returning the model); ``x = tf.gpu(x)`` returns a moved copy of an array or
Tensor. Without a usable GPU, ``gpu`` logs one warning and returns its
argument unchanged, so the same script runs on any machine.

``tf.xpu`` does the same with dpnp, for Intel GPUs ("xpu" is PyTorch's name
for them, which Intel's own PyTorch extension uses). It refuses to run
without dpnp: a user who asks for an Intel device should not silently
train on the CPU's NumPy instead.

``tf.to_device(obj, "torch:mps")`` moves onto a device of PyTorch's, whose
tensors then serve as tinyflux's arrays (``backends/torch_arrays.py``):
``torch:mps`` for Apple's GPUs, ``torch:cuda`` for NVIDIA's and, in PyTorch's
ROCm builds, AMD's, ``torch:xpu`` for Intel's, ``torch:cpu`` to try it all
on the CPU. It too refuses, naming the missing piece, instead of staying on
the CPU. ``to_device`` takes every name the examples' ``--device`` takes.
"""
from __future__ import annotations

from .backends import (cupy_available, dpnp_module, to_cpu_array, to_gpu_array, to_torch_array, to_xpu_array,
                       torch_module, warn_no_gpu_once)
from .tensor import Tensor


def _move(obj, move_array):
    from .nn import Module  # local import: nn builds on tensor, not the other way round

    if isinstance(obj, Module):
        for p in obj.parameters():
            p.data = move_array(p.data)
            p.grad = None if p.grad is None else move_array(p.grad)
        for _, buffer in obj.named_buffers():
            if buffer.data.dtype.kind == "f":  # running statistics; counters stay on the host, where Python reads them
                buffer.data = move_array(buffer.data)
        return obj
    if isinstance(obj, Tensor):
        moved = Tensor(move_array(obj.data), requires_grad=obj.requires_grad)
        return moved
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(item, move_array) for item in obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, (str, bytes)):
        return move_array(obj)
    raise TypeError(f"cannot move a {type(obj).__name__}: expected an array, a Tensor, a Module or a list of them")


def gpu(obj):
    """Move ``obj`` (array, Tensor, Module, list) to the GPU; unchanged (with a warning) when there is none.

    Something that cannot be moved (a string, None) is refused on every machine, with a GPU or without.
    """
    if not cupy_available():
        _move(obj, lambda array: array)  # the same checks as a real move: a TypeError for what cannot be moved
        warn_no_gpu_once()
        return obj
    return _move(obj, to_gpu_array)


def xpu(obj):
    """Move ``obj`` (array, Tensor, Module, list) to dpnp's default SYCL device (an Intel GPU, or the CPU's
    OpenCL device); RuntimeError without dpnp."""
    if dpnp_module() is None:
        raise RuntimeError("tf.xpu: dpnp is not installed or finds no SYCL device (pip install 'tinyflux[xpu]')")
    return _move(obj, to_xpu_array)


def cpu(obj):
    """Move ``obj`` (array, Tensor, Module, list) back to NumPy."""
    return _move(obj, to_cpu_array)


TORCH_PREFIX = "torch:"
DEVICE_ALIASES = {"mps": "torch:mps"}  # Apple's GPUs are reached through PyTorch only


def torch_device(name: str) -> str:
    """The torch device of a ``torch:NAME`` device ("torch:mps" -> "mps"), checked: RuntimeError when PyTorch is
    missing or has no such device here, naming what it found instead."""
    import torch  # torch_module() first: its error names the wheel to install

    torch_module()
    device = name[len(TORCH_PREFIX):]
    try:
        torch.empty(1, device=device)
    except Exception as error:  # an unknown name, a device this build or machine lacks
        found = [kind for kind in ("cuda", "mps", "xpu") if getattr(getattr(torch, kind, None), "is_available",
                                                                   lambda: False)()]
        raise RuntimeError(f"{name}: PyTorch {torch.__version__} cannot make a tensor there "
                           f"({str(error).splitlines()[0]}); devices it finds: "
                           f"{', '.join(TORCH_PREFIX + kind for kind in found + ['cpu'])}") from None
    return device


def to_device(obj, device: str):
    """``obj`` (array, Tensor, Module, list) on ``device``: "cpu", "gpu" (CuPy), "xpu" (dpnp), "mps", or
    "torch:NAME" for one of PyTorch's devices ("torch:cuda", "torch:xpu", "torch:cpu"). A Module moves in place."""
    device = DEVICE_ALIASES.get(device, device)
    if device == "cpu":
        return cpu(obj)
    if device == "gpu":
        return gpu(obj)
    if device == "xpu":
        return xpu(obj)
    if device.startswith(TORCH_PREFIX):
        name = torch_device(device)
        return _move(obj, lambda array: to_torch_array(array, name))
    raise ValueError(f"unknown device {device!r}: expected cpu, gpu, xpu, mps or torch:NAME (torch:cuda, "
                     "torch:xpu, torch:cpu)")
