"""The one place that knows CuPy exists.

Every op in tinyflux is written once, against an "array module" ``xp`` that is
either :mod:`numpy` or :mod:`cupy`; the two libraries share almost all of their
API, so ``xp = get_array_module(x)`` at the top of an op is all it takes to run
the same code on the CPU or on a CUDA GPU (the idea comes from DeZero and thinc).

CuPy is optional: it is imported here and nowhere else, and only used when it is
installed *and* a GPU answers. ``gpu(obj)`` on a machine without one logs a
single warning and hands the object back unchanged, so a script written for a
GPU still runs on a laptop.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import types

import numpy as np

log = logging.getLogger("tinyflux")

try:  # CuPy is an optional extra: pip install tinyflux[cuda12] or [cuda13]
    import cupy as _cupy
except Exception:  # not installed, or installed without a usable CUDA runtime
    _cupy = None

_gpu_checked = None  # None: not asked yet; True/False once cupy_available() ran
_warned_no_gpu = False


def cupy_available() -> bool:
    """True when CuPy is installed and at least one CUDA device answers."""
    global _gpu_checked
    if _gpu_checked is None:
        try:
            _gpu_checked = _cupy is not None and _cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # driver missing, no device, broken install
            _gpu_checked = False
    return _gpu_checked


def available_backends() -> list[str]:
    """Names of the array libraries usable here: always ``"numpy"``, plus ``"cupy"``."""
    return ["numpy", "cupy"] if cupy_available() else ["numpy"]


def array_module(name: str) -> types.ModuleType:
    """The module for a backend name: ``"numpy"`` or ``"cupy"``."""
    if name == "numpy":
        return np
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError("backend 'cupy' requested, but CuPy is not installed or no CUDA GPU answers")
        return _cupy
    raise ValueError(f"unknown backend {name!r}: expected 'numpy' or 'cupy'")


def get_array_module(array) -> types.ModuleType:
    """``cupy`` for a CuPy array, ``numpy`` for anything else."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return np


def is_gpu_array(array) -> bool:
    return _cupy is not None and isinstance(array, _cupy.ndarray)


_capture_safe = False  # True while tinyflux.graph records (or rehearses) a training step


@contextlib.contextmanager
def capture_safe():
    """Inside this block, ops take only paths that a CUDA-graph capture accepts.

    While a graph is captured, CUDA refuses cuBLAS calls, copies between host
    and device and anything that waits for the GPU. So: tinyflux's own CUDA
    kernels instead of CuPy's NumPy-style code, its own GEMM instead of
    cuBLAS (:func:`matmul`), and no checks that read a value back from the GPU.
    """
    global _capture_safe
    previous, _capture_safe = _capture_safe, True
    try:
        yield
    finally:
        _capture_safe = previous


def is_capture_safe() -> bool:
    return _capture_safe


def matmul(a, b):
    """``a @ b`` for 2-D arrays: BLAS or cuBLAS, except inside :func:`capture_safe`, where cuBLAS cannot run."""
    if _capture_safe and is_gpu_array(a):
        from . import cuda
        return cuda.gemm(a, b)
    return a @ b


def cuda_kernels(array):
    """The module of tinyflux's own CUDA kernels (``tinyflux.cuda``) when they should run on ``array``, else None.

    The single switch between the NumPy-style code, which runs on NumPy and
    CuPy alike, and the hand-written kernels: an op asks this once and takes
    the kernel path only when it gets the module back. That happens for every
    CuPy array, unless the environment variable ``TINYFLUX_CUDA_KERNELS`` is
    ``0``, which leaves CuPy's NumPy-style code to run everything (to compare
    the two, or to read the plain path in a debugger). On an H100 the full MNIST
    example ran at 3.45 ms per step with them and 4.35 ms without (medians over
    20 epochs, two separate runs: docs/results/h100). Inside :func:`capture_safe`
    they are always on, whatever the variable says: a graph then holds one node
    per kernel instead of one per CuPy slice copy.
    """
    if not is_gpu_array(array) or (not _capture_safe and os.environ.get("TINYFLUX_CUDA_KERNELS") == "0"):
        return None
    from . import cuda  # imported on first use: the CPU path never needs it
    return cuda


def backend_name(array) -> str:
    """``"cupy"`` or ``"numpy"``: used in error messages about mixed backends."""
    return "cupy" if is_gpu_array(array) else "numpy"


def to_cpu_array(array):
    """A NumPy array with the same contents (no copy when it already is one)."""
    if is_gpu_array(array):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def to_gpu_array(array):
    """A CuPy array with the same contents; the caller checked cupy_available()."""
    return _cupy.asarray(array)


def warn_no_gpu_once() -> None:
    global _warned_no_gpu
    if not _warned_no_gpu:
        _warned_no_gpu = True
        log.warning("tinyflux.gpu: no usable CUDA GPU (CuPy missing or no device); staying on the CPU")


def synchronize(array=None) -> None:
    """Wait for queued GPU work (a no-op on the CPU); benchmarks need it for honest timings."""
    if cupy_available():
        _cupy.cuda.get_current_stream().synchronize()


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to recycle freed memory instead of returning it to the OS.

    Why this makes training faster: a training step allocates and frees the
    same large arrays (im2col columns, activations, gradients) every time.
    By default glibc hands blocks above a threshold straight back to the
    kernel when NumPy frees them, so the next step's arrays arrive as fresh
    pages, and the first touch of each 4 KiB page is a page fault in which the
    kernel zeroes it. That was about 8,000 faults and a third of the CPU time
    of an MNIST step on a 2-core machine. Raising the mmap threshold to its
    maximum (32 MiB) and the trim threshold to 1 GiB keeps those blocks in the
    process, and the faults drop to about one per step. The cost: the process
    keeps its peak memory instead of shrinking between steps.

    Returns True when the setting was applied (Linux with glibc), False elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # the constants of glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 1 << 30))
