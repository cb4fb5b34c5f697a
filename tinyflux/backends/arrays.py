"""Which library an array belongs to, and moving arrays
between them: the only import of CuPy and dpnp in tinyflux.

CuPy (NVIDIA GPUs, and AMD GPUs through its ROCm build) is optional: it is
used only when it is installed *and* a GPU answers. dpnp (Intel's NumPy for
SYCL devices: Intel GPUs, and the CPU through OpenCL) is imported only when a
run asks for it (``--device xpu``, ``tf.xpu``): importing it starts the SYCL
runtime, which takes seconds that a CPU run should not pay. Everything else
in tinyflux asks these functions instead of importing either. PyTorch is
imported by ``torch_arrays.py`` alone, when a run first asks for a
``torch:NAME`` device (``torch_module``).
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


_dpnp = None  # the dpnp module once a run asked for it


def dpnp_module():
    """dpnp, imported on first use, if it is installed and finds a SYCL device; else None."""
    global _dpnp
    if _dpnp is None:
        try:
            import dpctl
            import dpnp
            _dpnp = dpnp if dpctl.get_devices() else False
        except Exception:  # not installed, or no OpenCL/Level Zero runtime with a device
            _dpnp = False
    return _dpnp or None


def array_module(name: str) -> types.ModuleType:
    """The module for a backend name: ``"numpy"``, ``"cupy"``, ``"dpnp"``, or ``"torch:DEVICE"``
    (the TorchNumpy that stands in for a module on that device of PyTorch's)."""
    if name == "numpy":
        return np
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError("backend 'cupy' requested, but CuPy is not "
                               "installed or no CUDA GPU answers")
        return cupy
    if name == "dpnp":
        if dpnp_module() is None:
            raise RuntimeError("backend 'dpnp' requested, but dpnp is not installed or finds no "
                               "SYCL device (pip install 'tinyflux[xpu]')")
        return dpnp_module()
    if name.startswith("torch:"):
        return torch_module().namespace(name[len("torch:"):])
    raise ValueError(f"unknown backend {name!r}: expected 'numpy', 'cupy', "
                     "'dpnp' or 'torch:DEVICE'")


def is_gpu_array(array) -> bool:
    return cupy is not None and isinstance(array, cupy.ndarray)


def is_xpu_array(array) -> bool:
    """Whether ``array`` is a dpnp array; asked by its
    type's module name, so that asking never imports dpnp."""
    return type(array).__module__.startswith("dpnp.")


def is_torch_array(array) -> bool:
    """Whether ``array`` is a TorchArray (torch_arrays.py); asking never
    imports torch: without that module loaded, no TorchArray exists."""
    module = sys.modules.get("tinyflux.backends.torch_arrays")
    return module is not None and isinstance(array, module.TorchArray)


def is_device_array(array) -> bool:
    """Whether ``array`` is one of the array libraries'
    own arrays that live off NumPy: CuPy, dpnp, torch."""
    return is_gpu_array(array) or is_xpu_array(array) or is_torch_array(array)


def get_array_module(array):
    """``cupy`` for a CuPy array, ``dpnp`` for a dpnp array, the
    device's TorchNumpy for a TorchArray, ``numpy`` for anything else."""
    if is_gpu_array(array):
        return cupy
    if is_xpu_array(array):
        return dpnp_module()
    if is_torch_array(array):
        return sys.modules["tinyflux.backends.torch_arrays"].namespace(array.tensor.device)
    return np


def backend_name(array) -> str:
    """``"cupy"``, ``"dpnp"``, ``"torch:DEVICE"`` or
    ``"numpy"``: used in error messages about mixed backends."""
    if is_torch_array(array):
        return f"torch:{array.tensor.device}"
    return "cupy" if is_gpu_array(array) else "dpnp" if is_xpu_array(array) else "numpy"


def has_float64(array) -> bool:
    """Whether the device of ``array`` computes in float64:
    Intel's Arc GPUs and Apple's MPS, for two, do not."""
    if is_torch_array(array):
        return get_array_module(array).has_float64
    return bool(array.sycl_device.has_aspect_fp64) if is_xpu_array(array) else True


def to_cpu_array(array):
    """A NumPy array with the same contents (no copy when it already is one)."""
    if is_gpu_array(array):
        return cupy.asnumpy(array)
    if is_xpu_array(array):
        return dpnp_module().asnumpy(array)
    if is_torch_array(array):
        return array.tensor.detach().cpu().numpy()
    return np.asarray(array)


def to_gpu_array(array):
    """A CuPy array with the same contents; the caller checked cupy_available()."""
    return cupy.asarray(array)


def to_xpu_array(array):
    """A dpnp array with the same contents, on dpnp's
    default SYCL device; the caller checked dpnp_module()."""
    return dpnp_module().asarray(to_cpu_array(array) if is_gpu_array(array) else array)


def torch_module():
    """torch_arrays.py (which imports torch), imported on
    first use; RuntimeError naming the wheel without torch."""
    try:
        from . import torch_arrays
    except ImportError as error:
        if getattr(error, "name", None) != "torch":
            raise
        raise RuntimeError("a torch:DEVICE was asked for, but PyTorch is not installed: pip "
                           "install torch (see docs/gpu.md for the "
                           "build that fits your GPU)") from None
    return torch_arrays


def to_torch_array(array, device: str):
    """A TorchArray on the torch device ``device`` ("cpu",
    "mps", "cuda", "xpu") with the contents of ``array``."""
    namespace = torch_module().namespace(device)
    # CuPy, dpnp: via the host
    return namespace.asarray(array if is_torch_array(array) else to_cpu_array(array))


def nccl():
    """CuPy's NCCL bindings (``cupy.cuda.nccl``) when CuPy found the NCCL library, else None."""
    try:
        from cupy.cuda import nccl as bindings
    except Exception:  # no CuPy, or a CuPy built without NCCL
        return None
    return bindings if bindings.available else None


def available_backends() -> list[str]:
    """Names of the array libraries usable here: always ``"numpy"``, plus ``"cupy"`` with a CUDA GPU
    (dpnp is not listed: it is imported only when a run asks for it)."""
    return ["numpy", "cupy"] if cupy_available() else ["numpy"]


def warn_no_gpu_once() -> None:
    global _warned_no_gpu
    if not _warned_no_gpu:
        _warned_no_gpu = True
        log.warning("tinyflux.gpu: no usable CUDA GPU (CuPy missing or no "
                    "device); staying on the CPU")


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
    return bool(mallopt(m_mmap_threshold,
                        32 * 1024 * 1024)) and bool(mallopt(m_trim_threshold, 1 << 30))
