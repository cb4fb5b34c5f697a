"""Matrix products by cuBLAS, called directly, so that a CUDA graph records them (``tf.capture``).

Why not CuPy's ``a @ b``. CuPy sets the stream of its cuBLAS handle before
every call, and refuses to while that stream is being captured (its
``setStream`` raises NotImplementedError). cuBLAS itself can be recorded,
on one condition: it must not allocate memory during the capture, so it
needs a workspace of its own, given to the handle after its stream (setting
the stream puts the handle back on cuBLAS's own workspace pool). PyTorch
records its products the same way. So this module keeps one cuBLAS handle
of its own per GPU, with a 32 MiB workspace (what cuBLAS's documentation
asks for on Hopper GPUs; 4 MiB on older ones), both kept for the life of the
process, since a replayed graph uses them again.

cuBLAS is column-major, NumPy and CuPy row-major. A row-major (r, c) array
read column-major is its transpose (c, r), so the row-major C = A @ B is
computed as the column-major C^T = B^T A^T:

    gemm(op_B, op_A, n, m, k, B, ldb, A, lda, C, ldc=n)     C (m, n), A (m, k), B (k, n)

where a C-contiguous factor is passed as it is (op N, leading dimension its
row length) and an F-contiguous one (a transposed view, like ``w.T``) with
op T and its column length.
"""
from __future__ import annotations

import ctypes

import numpy as np

WORKSPACE_BYTES = 32 * 2**20
OP_N, OP_T = 0, 1  # cublasOperation_t
# the sonames of cuBLAS that CuPy's CUDA 13, 12 and 11 builds load (Linux, then Windows)
LIBRARY_NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11",
                 "cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll")


def load_library():
    """libcublas as a ctypes library, or None where it cannot be found. CuPy's
    bindings are imported first: they load the same library into the process."""
    try:
        # imported for what it does: it loads libcublas into the process
        import cupy_backends.cuda.libs.cublas  # noqa: F401
    except ImportError:
        return None
    for name in LIBRARY_NAMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def device_pointer(array) -> int:
    """The address of a CuPy array's first element."""
    return array.data.ptr


class CublasError(RuntimeError):
    """A cuBLAS call did not return CUBLAS_STATUS_SUCCESS."""


class CublasCalls:
    """One cuBLAS handle with its own workspace on the current GPU, and the row-major product."""

    def __init__(self, library, cupy):
        """Raises AttributeError where the library lacks a function this class calls (a cuBLAS
        older than 11 has no cublasSetWorkspace_v2), CublasError where cuBLAS refuses a handle."""
        for name in ("cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
                     "cublasSgemm_v2", "cublasDgemm_v2"):
            getattr(library, name)  # ctypes looks the symbol up here: missing ones fail now
        self.library, self.cupy = library, cupy
        handle = ctypes.c_void_p()
        self._check("cublasCreate_v2", library.cublasCreate_v2(ctypes.byref(handle)))
        self.handle = handle
        self.workspace = cupy.cuda.alloc(WORKSPACE_BYTES)  # kept: replays use it again
        self.stream = None  # the stream the handle runs on, set at the first product

    def _check(self, name: str, status: int) -> None:
        if status != 0:
            raise CublasError(f"{name} returned cuBLAS status {status}")

    def _on_current_stream(self) -> None:
        """Bind the handle to CuPy's current stream (the capture's, inside one), then give it the
        workspace again, which setting the stream took away; both are host-side settings, which
        a capture accepts."""
        stream = self.cupy.cuda.get_current_stream().ptr
        if stream != self.stream:
            self._check("cublasSetStream_v2",
                        self.library.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream)))
            self._check("cublasSetWorkspace_v2", self.library.cublasSetWorkspace_v2(
                self.handle, ctypes.c_void_p(self.workspace.ptr), ctypes.c_size_t(WORKSPACE_BYTES)))
            self.stream = stream

    def matmul(self, a, b):
        """a (m, k) @ b (k, n) -> (m, n), C-contiguous, for float32 or float64 arrays."""
        cp = self.cupy
        m, k = a.shape
        n = b.shape[1]
        out = cp.empty((m, n), dtype=a.dtype)
        if m == 0 or n == 0:
            return out
        if k == 0:
            out[...] = 0
            return out
        # each factor as cuBLAS reads it: (op, leading dimension, the array)
        b_op, ldb, b = _as_column_major(cp, b, n, k)
        a_op, lda, a = _as_column_major(cp, a, k, m)
        scalar = ctypes.c_float if a.dtype == np.float32 else ctypes.c_double
        gemm = self.library.cublasSgemm_v2 if a.dtype == np.float32 else self.library.cublasDgemm_v2
        one, zero = scalar(1), scalar(0)
        self._on_current_stream()
        # column-major C^T (n, m) = op(B) (n, k) @ op(A) (k, m); see the module docstring
        self._check("cublas gemm", gemm(
            self.handle, b_op, a_op, n, m, k, ctypes.byref(one),
            ctypes.c_void_p(device_pointer(b)), ldb, ctypes.c_void_p(device_pointer(a)), lda,
            ctypes.byref(zero), ctypes.c_void_p(device_pointer(out)), n))
        return out


def _as_column_major(cp, array, row_length: int, column_length: int) -> tuple:
    """(op, leading dimension, array) for a row-major factor whose transpose cuBLAS is to read
    as a (row_length, column_length) column-major matrix: as it is when C-contiguous (op N),
    transposed when F-contiguous (op T), else copied to C order first."""
    if array.flags.c_contiguous:
        return OP_N, row_length, array
    if array.flags.f_contiguous:
        return OP_T, column_length, array
    return OP_N, row_length, cp.ascontiguousarray(array)
