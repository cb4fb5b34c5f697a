"""Which library an array belongs to, and moving arrays between them: the only import of CuPy in tinyflux.

CuPy is optional: it is used only when it is installed *and* a GPU answers.
Everything else in tinyflux asks these functions instead of importing CuPy.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import types

import numpy as np

try:  # CuPy is an optional extra: pip install tinyflux[cuda12] or [cuda13]
    import cupy
except Exception:  # not installed, or installed without a usable CUDA runtime
    cupy = None

_gpu_checked = None  # None: not asked yet; True/False once cupy_available() ran
_warned_no_gpu = False
log = logging.getLogger("tinyflux")


def cupy_available() -> bool:
    """True when CuPy is installed and at least one CUDA device answers."""
    global _gpu_checked
    if _gpu_checked is None:
        try:
            _gpu_checked = cupy is not None and cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # driver missing, no device, broken install
            _gpu_checked = False
    return _gpu_checked


def array_module(name: str) -> types.ModuleType:
    """The module for a backend name: ``"numpy"`` or ``"cupy"``."""
    if name == "numpy":
        return np
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError("backend 'cupy' requested, but CuPy is not installed or no CUDA GPU answers")
        return cupy
    raise ValueError(f"unknown backend {name!r}: expected 'numpy' or 'cupy'")


def is_gpu_array(array) -> bool:
    return cupy is not None and isinstance(array, cupy.ndarray)


def get_array_module(array) -> types.ModuleType:
    """``cupy`` for a CuPy array, ``numpy`` for anything else."""
    return cupy if is_gpu_array(array) else np


def backend_name(array) -> str:
    """``"cupy"`` or ``"numpy"``: used in error messages about mixed backends."""
    return "cupy" if is_gpu_array(array) else "numpy"


def to_cpu_array(array):
    """A NumPy array with the same contents (no copy when it already is one)."""
    if is_gpu_array(array):
        return cupy.asnumpy(array)
    return np.asarray(array)


def to_gpu_array(array):
    """A CuPy array with the same contents; the caller checked cupy_available()."""
    return cupy.asarray(array)


def nccl():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``) when CuPy found the NCCL library, else None."""
    try:
        from cupy.cuda import nccl as bindings
    except Exception:  # no CuPy, or a CuPy built without NCCL
        return None
    return bindings if bindings.available else None


def available_backends() -> list[str]:
    """Names of the array libraries usable here: always ``"numpy"``, plus ``"cupy"``."""
    return ["numpy", "cupy"] if cupy_available() else ["numpy"]


def warn_no_gpu_once() -> None:
    global _warned_no_gpu
    if not _warned_no_gpu:
        _warned_no_gpu = True
        log.warning("tinyflux.gpu: no usable CUDA GPU (CuPy missing or no device); staying on the CPU")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to recycle freed memory instead of returning it to the OS.

    Why this makes training faster: a training step allocates and frees the
    same large arrays (im2col columns, activations, gradients) every time.
    By default glibc hands blocks above a threshold straight back to the
    kernel when NumPy frees them, so the next step's arrays arrive as fresh
    pages, and the first touch of each 4 KiB page is a page fault in which the
    kernel zeroes it: thousands of faults per MNIST step. Raising the mmap
    threshold to its maximum (32 MiB) and the trim threshold to 1 GiB keeps
    those blocks in the process, and the faults drop to about one per step. The
    cost: the process keeps its peak memory instead of shrinking between steps.

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
