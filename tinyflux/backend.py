"""The array libraries, as the rest of tinyflux and its users see them: ``tf.backend``.

Every op in tinyflux is written once, against an "array module" ``xp`` that is
either :mod:`numpy` or :mod:`cupy`; the two libraries share almost all of their
API, so ``xp = get_array_module(x)`` at the top of an op is all it takes to run
the same code on the CPU or on a CUDA GPU (the idea comes from DeZero and thinc).
Where a backend has faster code of its own for an operation, the op asks
``tinyflux.backends.ops_for(x)`` for it (see that package).

CuPy is optional: ``tinyflux/backends/arrays.py`` imports it, and only uses it
when it is installed *and* a GPU answers. ``gpu(obj)`` on a machine without one
logs a single warning and hands the object back unchanged, so a script written
for a GPU still runs on a laptop.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

from .backends.arrays import (array_module, backend_name, cupy_available, get_array_module, is_gpu_array,
                              to_cpu_array, to_gpu_array)
from .modes import capturing as capture_safe  # noqa: F401 (the name tinyflux.graph and the tests use)
from .modes import modes

log = logging.getLogger("tinyflux")
_warned_no_gpu = False

__all__ = ["array_module", "available_backends", "backend_name", "capture_safe", "cupy_available",
           "get_array_module", "is_capture_safe", "is_gpu_array", "keep_freed_memory", "to_cpu_array",
           "to_gpu_array", "warn_no_gpu_once"]


def available_backends() -> list[str]:
    """Names of the array libraries usable here: always ``"numpy"``, plus ``"cupy"``."""
    return ["numpy", "cupy"] if cupy_available() else ["numpy"]


def is_capture_safe() -> bool:
    """Whether a CUDA graph is being recorded (``modes.capture``): then no check may read from the GPU."""
    return modes.capture


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
