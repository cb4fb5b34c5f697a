"""Moving arrays, Tensors and models between the CPU
(NumPy) and a GPU (CuPy or dpnp), like Flux's gpu/cpu.

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

import os
import sys

from .backends import (cupy_available, dpnp_module, get_array_module, to_cpu_array, to_gpu_array,
                       to_torch_array, to_xpu_array, torch_module, warn_no_gpu_once)
from .tensor import Tensor


def _move(obj, move_array):
    from .nn import Module  # local import: nn builds on tensor, not the other way round

    if isinstance(obj, Module):
        for p in obj.parameters():
            p.data = move_array(p.data)
            p.grad = None if p.grad is None else move_array(p.grad)
        for _, buffer in obj.named_buffers():
            # running statistics; counters stay on the host, where Python reads them
            if buffer.data.dtype.kind == "f":
                buffer.data = move_array(buffer.data)
        return obj
    if isinstance(obj, Tensor):
        moved = Tensor(move_array(obj.data), requires_grad=obj.requires_grad)
        return moved
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(item, move_array) for item in obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, (str, bytes)):
        return move_array(obj)
    raise TypeError(f"cannot move a {type(obj).__name__}: expected an array, a Tensor, a "
                    "Module or a list of them")


def on_model_device(x, model):
    """The host array ``x`` on the device of the model's
    parameters (a GPU's, PyTorch's), unchanged on the CPU."""
    parameters = list(model.parameters())
    xp = get_array_module(parameters[0].data) if parameters else None
    return x if xp is None or isinstance(parameters[0].data, type(x)) else xp.asarray(x)


def gpu(obj):
    """Move ``obj`` (array, Tensor, Module, list) to the
    GPU; unchanged (with a warning) when there is none.

    Something that cannot be moved (a string, None) is
    refused on every machine, with a GPU or without."""
    if not cupy_available():
        # the same checks as a real move: a TypeError for what cannot be moved
        _move(obj, lambda array: array)
        warn_no_gpu_once()
        return obj
    return _move(obj, to_gpu_array)


def xpu(obj):
    """Move ``obj`` (array, Tensor, Module, list) to dpnp's default SYCL device (an Intel GPU, or
    the CPU's OpenCL device); RuntimeError without dpnp."""
    if dpnp_module() is None:
        raise RuntimeError("tf.xpu: dpnp is not installed or finds no SYCL device (pip "
                           "install 'tinyflux[xpu]')")
    return _move(obj, to_xpu_array)


def cpu(obj):
    """Move ``obj`` (array, Tensor, Module, list) back to NumPy."""
    return _move(obj, to_cpu_array)


TORCH_PREFIX = "torch:"
DEVICE_ALIASES = {"mps": "torch:mps"}  # Apple's GPUs are reached through PyTorch only


def torch_device(name: str) -> str:
    """The torch device of a ``torch:NAME`` device ("torch:mps" -> "mps"), checked: RuntimeError
    when PyTorch is missing or has no such device here, naming what it found instead."""
    torch_module()  # first: without PyTorch, its error names the wheel to install
    import torch

    device = name[len(TORCH_PREFIX):]
    try:
        torch.empty(1, device=device)
    except Exception as error:  # an unknown name, a device this build or machine lacks
        found = [kind for kind in ("cuda", "mps",
                                   "xpu") if getattr(getattr(torch, kind, None), "is_available",
                                                     lambda: False)()]
        # torch's first sentence; the rest lists backends
        reason = str(error).splitlines()[0].split(". ")[0][:160]
        devices = ", ".join(TORCH_PREFIX + kind for kind in found + ["cpu"])
        raise RuntimeError(f"PyTorch {torch.__version__} cannot make a tensor on {name} "
                           f"({reason}); devices it finds here: {devices}") from None
    return device


def to_device(obj, device: str):
    """``obj`` (array, Tensor, Module, list) on ``device``: "cpu", "gpu"
    (CuPy), "xpu" (dpnp), "mps", or "torch:NAME" for one of PyTorch's devices
    ("torch:cuda", "torch:xpu", "torch:cpu"). A Module moves in place."""
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
    raise ValueError(f"unknown device {device!r}: expected cpu, gpu, xpu, mps or torch:NAME "
                     "(torch:cuda, torch:xpu, torch:cpu)")


# the vendor ids of PCI display devices
PCI_VENDORS = {"0x10de": "NVIDIA", "0x1002": "AMD", "0x8086": "Intel"}


def gpu_vendors(drm="/sys/class/drm") -> list[str]:
    """The makers of the graphics devices Linux lists (in
    /sys/class/drm), e.g. ["Intel", "AMD"]; [] elsewhere."""
    import glob

    found = []
    for path in sorted(glob.glob(os.path.join(drm, "card[0-9]*", "device", "vendor"))):
        try:
            with open(path) as file:
                vendor = PCI_VENDORS.get(file.read().strip().lower())
        except OSError:
            continue
        if vendor and vendor not in found:
            found.append(vendor)
    return found


def gpu_advice(platform: str = None, vendors: list = None) -> str:
    """One line saying how to reach the GPUs this machine
    has, for a run that asked for a CUDA GPU and found none.

    PyTorch's own answer comes first where it is installed (it knows its devices); otherwise the
    operating system and the makers of the graphics devices decide which wheel to name."""
    platform = platform or sys.platform
    vendors = gpu_vendors() if vendors is None else vendors
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        if torch.backends.mps.is_available():
            return "PyTorch finds Apple's MPS GPU: use --device mps (tf.to_device(model, 'mps'))"
        if torch.cuda.is_available():
            kind = "an AMD GPU (ROCm build)" if torch.version.hip else "a CUDA GPU"
            return f"PyTorch finds {kind}: use --device torch:cuda"
        if hasattr(torch, "xpu") and torch.xpu.is_available():
            return "PyTorch finds an Intel GPU: use --device torch:xpu"
    if platform == "darwin":
        return ("on a Mac, GPUs are reached through PyTorch's MPS: pip install torch (Intel Macs: "
                "torch==2.2.2, the last release with wheels for them), then --device mps")
    if "NVIDIA" in vendors:
        return "an NVIDIA GPU is present: pip install 'tinyflux[cuda12]' (or [cuda13]) brings CuPy"
    if "AMD" in vendors:
        return ("an AMD GPU is present: PyTorch's ROCm build (its pip line for your ROCm version "
                "is on https://pytorch.org/get-started/locally/), then --device torch:cuda")
    if "Intel" in vendors:
        return ("an Intel GPU is present: PyTorch's XPU build (pip install torch --index-url "
                "https://download.pytorch.org/whl/xpu), then --device torch:xpu; or pip install "
                "'tinyflux[xpu]' and --device xpu")
    if platform == "win32":
        return ("on Windows: an NVIDIA GPU with pip install 'tinyflux[cuda12]'; an Intel GPU with "
                "PyTorch's XPU build and --device torch:xpu; docs/gpu.md lists the rest")
    return "no GPU found; docs/gpu.md lists the ways to each maker's GPUs"
