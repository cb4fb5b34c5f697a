"""Backends: which code runs an operation, chosen once per call by the kind of array.

An op (``tinyflux/functional``) writes its simple arithmetic once against the
array's own library, ``xp = get_array_module(x)`` (NumPy or CuPy, which share
their interface), and hands the hot operations to an *ops object*:

    ops = ops_for(x)                       # once, at the top of the op
    columns = ops.im2col(x, kernel, stride, pad)

    NumpyOps   (numpy_ops.py)  NumPy-style code: NumPy arrays, and CuPy arrays with own kernels off
    NumbaOps   (numba_ops.py)  NumpyOps plus Numba kernels for NumPy arrays, where Numba is
                               installed
    CudaOps    (cuda_ops.py)   tinyflux's CUDA kernels (kernels.cu) for CuPy arrays; a subclass of
                               NumpyOps
    RocmOps    (cuda_ops.py)   the same kernels through CuPy's ROCm build, for AMD GPUs (hipRTC's
                               options)
    DpnpOps    (dpnp_ops.py)   NumPy-style code on dpnp arrays (Intel GPUs through SYCL); a subclass
                               of NumpyOps
    TorchOps   (torch_ops.py)  NumPy-style code on TorchArrays, NumPy's interface on PyTorch's
                               tensors (torch_arrays.py: Apple's MPS, AMD and Intel GPUs through
                               PyTorch); likewise

The array libraries themselves (which one an array belongs to, moving
arrays, whether a GPU answers) are in ``arrays.py``, the one module that
imports CuPy. The choice is made here and nowhere else: no op has a branch on the kind of
array. For CuPy arrays it follows ``modes.own_kernels`` (the environment
variable ``TINYFLUX_CUDA_KERNELS=0`` turns the kernels off), except during a
CUDA-graph capture (``modes.capture``), which needs them. For NumPy arrays
it follows ``modes.cpu_kernels`` and whether Numba can be imported: Numba is
an optional extra (``tinyflux[fast]``), so without it NumPy arrays get
``NumpyOps``, and importing tinyflux never imports Numba.

A new backend is a subclass and a registration. Its ops class overrides the
operations it does its own way (everything else falls back to the NumPy-style
code, run by its array library), and ``register`` tells ``ops_for`` which
arrays are its, ahead of the built-in ones. CuPy's ROCm build for AMD GPUs
keeps the ``cupy`` name, so ``kernel_ops`` picks ``RocmOps`` for CuPy arrays
when ``cupy.cuda.runtime.is_hip`` is true.
"""
from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from ..modes import modes
from .arrays import (array_module, available_backends, backend_name, cupy, cupy_available,
                     dpnp_module, get_array_module, has_float64, is_device_array, is_gpu_array,
                     is_torch_array, is_xpu_array, keep_freed_memory, to_cpu_array, to_gpu_array,
                     to_torch_array, to_xpu_array, torch_module, warn_no_gpu_once)
from .numpy_ops import Columns, MaxPoolSaved, NumpyOps

NUMPY_OPS = NumpyOps()
_cuda_ops = None  # made on first use: the CPU path never compiles a kernel
_registered: list = []  # (recognises(array) -> bool, ops_for_it(array) -> ops), newest first


def kernel_ops():
    """The one CudaOps object for CuPy arrays (it keeps
    the compiled kernels): RocmOps on CuPy's ROCm build."""
    global _cuda_ops
    if _cuda_ops is None:
        from .cuda_ops import CudaOps, RocmOps
        on_rocm = cupy is not None and cupy.cuda.runtime.is_hip
        _cuda_ops = (RocmOps if on_rocm else CudaOps)(cupy)
    return _cuda_ops


def register(recognises: Callable, ops_for_it: Callable) -> None:
    """Make ``ops_for(array)`` return ``ops_for_it(array)``
    for every array that ``recognises(array)``."""
    _registered.insert(0, (recognises, ops_for_it))


def ops_for(array):
    """The ops object that runs the hot operations on ``array``."""
    for recognises, ops_for_it in _registered:
        if recognises(array):
            return ops_for_it(array)
    return cpu_ops() if isinstance(array, np.ndarray) else NUMPY_OPS


_numba_ops = None  # made on first use, False where Numba cannot be imported


def cpu_ops():
    """The ops for NumPy arrays: NumbaOps when Numba is
    installed and ``modes.cpu_kernels`` is on, else NumpyOps."""
    global _numba_ops
    if not modes.cpu_kernels:
        return NUMPY_OPS
    if _numba_ops is None:
        try:
            from .numba_ops import NumbaOps
        # no Numba (pip install 'tinyflux[fast]'): the NumPy code does everything
        except ImportError:
            _numba_ops = False
        else:
            _numba_ops = NumbaOps()
    return _numba_ops or NUMPY_OPS


def _cupy_ops(array):
    return kernel_ops() if modes.own_kernels or modes.capture else NUMPY_OPS


register(is_gpu_array, _cupy_ops)


def _made_on_first_use(module: str, class_name: str) -> Callable:
    """``ops_for_it`` for ``register``: one object of ``module.class_name``, imported and made at
    the first array that needs it (so importing tinyflux imports neither dpnp nor torch)."""
    made = []

    def ops_for_it(array):
        if not made:
            made.append(getattr(importlib.import_module(module, __name__), class_name)())
        return made[0]
    return ops_for_it


register(is_xpu_array, _made_on_first_use(".dpnp_ops", "DpnpOps"))
register(is_torch_array, _made_on_first_use(".torch_ops", "TorchOps"))

__all__ = ["Columns", "MaxPoolSaved", "NUMPY_OPS", "NumpyOps", "array_module",
           "available_backends", "backend_name", "cpu_ops", "cupy_available", "dpnp_module",
           "get_array_module", "has_float64", "is_device_array", "is_gpu_array", "is_torch_array",
           "is_xpu_array", "keep_freed_memory", "kernel_ops", "ops_for", "register",
           "to_cpu_array", "to_gpu_array", "to_torch_array", "to_xpu_array", "torch_module",
           "warn_no_gpu_once"]
