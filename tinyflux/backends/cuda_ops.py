"""``CudaOps``: the hot operations as tinyflux's own CUDA kernels, for CuPy arrays.

Why own kernels when CuPy already runs every NumPy-style line? Each CuPy call
costs the CPU 5 to 30 microseconds to launch, and most kernels of an MNIST
step run for only a few: a step is bound by launches, not by arithmetic. The
NumPy-style code issues one slice copy per kernel offset in im2col (9 for a
3x3 kernel), one per pass and offset in max-pool, several for bias + ReLU and
for each Adam update. Here each of those is one launch.

The C++ source is ``kernels.cu`` beside this file; :meth:`CudaOps.source`
puts in front of it the ``Geometry`` struct (generated from :data:`GEOMETRY`,
so that Python and C cannot disagree on the order of its fields) and the
launch constants. Every spatial input is treated as 3-D (D, H, W); a 2-D
image has D = 1 and a 1-D sequence D = H = 1. The sizes, strides and
paddings travel in one small int64 array, ``g``. The input may be any strided
view (such as the channel-major view a convolution returns): its element
strides are part of ``g``. Outputs are written channel-major, (C, N, ...),
and returned as (N, C, ...) views, as the NumPy code does.

Matrix products are cuBLAS's: through CuPy's ``a @ b``, and inside a
CUDA-graph capture (``tinyflux/cuda_graph.py``), where CuPy refuses to call
cuBLAS, through a handle of our own with its own workspace
(``cublas_calls.py``). For captures without it (``tf.capture(...,
cublas=False)``, or no cuBLAS library found) there is also a GEMM of our
own, tiled in shared memory with long sums split across blocks.

The CuPy module is passed in (``CudaOps(cupy)``): the tests pass a stand-in
that runs the same kernels compiled for the CPU.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..modes import modes
from . import cublas_calls
from .geometry import output_size
from .numpy_ops import Columns, MaxPoolSaved, NumpyOps

log = logging.getLogger("tinyflux")


# Fields of the geometry array g: batch, channels, input D/H/W, kernel (window) D/H/W,
# output D/H/W, stride D/H/W, padding D/H/W, the input's element strides for N, C, D, H, W, and
# NARROW: 1 when every index the kernel computes fits
# in 32 bits (see "Index arithmetic" in kernels.cu).
GEOMETRY = ("N", "C", "D", "H", "W", "KD", "KH", "KW", "OD", "OH", "OW",
            "SD", "SH", "SW", "PD", "PH", "PW", "XN", "XC", "XD", "XH", "XW", "NARROW")
# below INT_MAX by more than a grid-stride step (65535 blocks x 256 threads)
NARROW_LIMIT = 2**31 - 2**25

THREADS = 256  # per block; the grid-stride loops cover the rest
# per launch: the grid-stride loops wrap past it (the limit of a CUDA grid's y and z, kept for x)
MAX_BLOCKS = 65535
# gemm's tiles are GEMM_TILE x GEMM_TILE outputs, one block of GEMM_TILE**2 threads each
GEMM_TILE = 16
# gemm splits long sums until it has about this many blocks: 4 per H100 multiprocessor
GEMM_BLOCKS = 528
GEMM_MAX_SPLITS = 64  # and into at most this many ranges, which sum_splits then adds up

# float and double
KERNELS = ("im2col", "col2im", "maxpool", "maxpool_backward", "gemm", "sum_splits", "adam")
PLAIN_KERNELS = ("count_step",)  # not templates
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
KERNEL_FILE = Path(__file__).with_name("kernels.cu")


def source() -> str:
    """The whole CUDA source: the Geometry struct and constants, then kernels.cu."""
    struct = ("template <typename I>\nstruct Geometry {\n    I " + ", ".join(GEOMETRY) + ";\n"
              "    __device__ explicit Geometry(const long long* g)\n        : "
              + ", ".join(f"{name}((I)g[{i}])" for i, name in enumerate(GEOMETRY)) + " {}\n};\n"
              f"#define G_NARROW g[{GEOMETRY.index('NARROW')}]\n")
    constants = f"#define THREADS {THREADS}\n#define GEMM_TILE {GEMM_TILE}\n"
    return struct + constants + KERNEL_FILE.read_text(encoding="utf-8")


def geometry(x_shape, x_strides, kernel, stride, pad, out) -> np.ndarray:
    """The int64 array ``g`` for a (N, C, *S) input with 1 to 3 spatial axes, padded out to 3 axes.

    ``x_strides`` are in elements (NumPy's ``strides`` divided by the item size).
    """
    d = len(kernel)
    missing = 3 - d  # a 2-D image has D = 1, a 1-D sequence D = H = 1
    n, c, *sizes = x_shape
    xn, xc, *spatial_strides = x_strides
    values = ([n, c] + [1] * missing + list(sizes) + [1] * missing + list(kernel)
              + [1] * missing + list(out) + [1] * missing + list(stride) + [0] * missing
              + list(pad) + [xn, xc] + [0] * missing + list(spatial_strides))
    # the largest index any of the four kernels computes: into the columns (C*K*N*Q elements), into
    # the input or its gradient (N*C*S), or into a strided input view (its farthest element)
    # math.prod: np.prod is slow on short tuples
    columns = c * math.prod(kernel) * n * math.prod(out)
    input_extent = 1 + sum((size - 1) * abs(step) for size, step in zip(x_shape, x_strides))
    largest = max(columns, n * c * math.prod(sizes), input_extent, *values)
    return np.array(values + [int(largest < NARROW_LIMIT)], dtype=np.int64)


def gemm_splits(m: int, n: int, k: int) -> tuple:
    """(splits, chunk): how gemm cuts the sum over k, so that a
    product with few outputs still has about GEMM_BLOCKS blocks of
    work (at most GEMM_MAX_SPLITS ranges, each at least 4 tiles long)."""
    tiles = max(1, -(-m // GEMM_TILE) * -(-n // GEMM_TILE))  # ceiling divisions
    splits = max(1, min(-(-GEMM_BLOCKS // tiles), GEMM_MAX_SPLITS, k // (4 * GEMM_TILE)))
    chunk = max(1, -(-k // splits))
    chunk = -(-chunk // GEMM_TILE) * GEMM_TILE  # whole tiles per range
    return max(1, -(-k // chunk)), chunk


def grid_stride_blocks(total: int) -> int:
    """Blocks for a grid-stride kernel over ``total``
    elements: one thread each, up to MAX_BLOCKS blocks."""
    # ceiling division, capped: the loop strides on
    return max(1, min(-(-total // THREADS), MAX_BLOCKS))


def gemm_blocks(m: int, n: int, splits: int) -> int:
    """Blocks for gemm: one per (tile of the output,
    range of k), up to MAX_BLOCKS (its loop strides on)."""
    return max(1, min(-(-m // GEMM_TILE) * -(-n // GEMM_TILE) * splits, MAX_BLOCKS))


def _element_strides(array) -> list:
    return [s // array.itemsize for s in array.strides]


def _channels_first_view(array):
    """(C, N, *S) contiguous memory seen as (N, C, *S)."""
    return array.swapaxes(0, 1)


def _output_shape(sizes, kernel, stride, pad) -> tuple:
    return tuple(output_size(s, k, st, p) for s, k, st, p in zip(sizes, kernel, stride, pad))


# The element-wise kernels' C bodies (CuPy writes the loop around each); the tests compile the same
# text for the CPU (tests/cuda_emulation.py), so what they check is what runs on a GPU.
ELEMENTWISE_BODIES = {"tinyflux_bias_relu": "T v = x + b; y = (v > T(0) || v != v) ? v : T(0)",
                      "tinyflux_relu_backward": "gx = gy * (y > T(0) ? T(1) : T(0))"}
ELEMENTWISE_PARAMETERS = {"tinyflux_bias_relu": (("x", "b"), ("y",)),
                          "tinyflux_relu_backward": (("gy", "y"), ("gx",))}


class CudaOps(NumpyOps):
    """NumpyOps's operations in one launch each, on
    CuPy arrays; what it does not override, CuPy runs."""

    compile_options = ("-std=c++17",)  # for NVRTC through cupy.RawModule, and for hipRTC (RocmOps)

    def __init__(self, cupy_module):
        self.cupy = cupy_module
        self._module = None  # the compiled kernels, on first use
        self._device_arrays: dict = {}  # small int64 arrays copied to the GPU once per shape
        self._elementwise: dict = {}
        self._cublas: dict = {}  # GPU id -> cublas_calls.CublasCalls there, or None

    # -- compile once, cache, launch -----------------------------------------------------
    def source(self) -> str:
        return source()

    def function(self, name: str, dtype=None):
        """The compiled kernel ``name<float>`` or
        ``name<double>`` (``name`` for a plain one, dtype None)."""
        if self._module is None:
            expressions = [f"{k}<{t}>" for k in KERNELS for t in CTYPES.values()]
            expressions += list(PLAIN_KERNELS)
            self._module = self.cupy.RawModule(code=self.source(), options=self.compile_options,
                                               name_expressions=expressions)
        if dtype is None:
            return self._module.get_function(name)
        if np.dtype(dtype) not in CTYPES:
            raise TypeError(f"CUDA kernels: float32 or float64 arrays expected, got {dtype}")
        return self._module.get_function(f"{name}<{CTYPES[np.dtype(dtype)]}>")

    def _device(self, key: tuple, make):
        """An int64 array on the GPU, made and copied there once per key and then kept (a few
        hundred bytes each): a copy to the GPU costs microseconds and is refused inside a CUDA-graph
        capture, and the same few shapes come back at every training step."""
        if key not in self._device_arrays:
            self._device_arrays[key] = self.cupy.asarray(make())
        return self._device_arrays[key]

    def _geometry(self, x_shape, x_strides, kernel, stride, pad, out):
        key = ("geometry", tuple(x_shape), tuple(x_strides), tuple(kernel), tuple(stride),
               tuple(pad), tuple(out))
        return self._device(key, lambda: geometry(*key[1:]))

    def _launch(self, name: str, dtype, total: int, args) -> None:
        self.function(name, dtype)((grid_stride_blocks(total),), (THREADS,), args)

    def _kernel(self, name: str, inputs: str, outputs: str, body: str):
        """An element-wise kernel: CuPy writes the loop, we write one line of its body."""
        if name not in self._elementwise:
            self._elementwise[name] = self.cupy.ElementwiseKernel(inputs, outputs, body, name)
        return self._elementwise[name]

    # -- the operations ------------------------------------------------------------------
    def conv_pool(self, x, w, b, pad: tuple, window: tuple):
        """A convolution and its pooling as two ops, conv then maxpool, each of one launch: the
        block layout of NumpyOps.conv_pool saves CPU memory traffic, and has no kernel here."""
        return self.conv_then_pool(x, w, b, pad, window)

    def conv_pool_backward(self, gy, w, saved, needs: tuple):
        return self.conv_then_pool_backward(gy, w, saved, needs)

    def matmul(self, a, b):
        """cuBLAS through CuPy; inside a CUDA-graph capture, cuBLAS through our own handle where
        ``tf.capture`` set it up (``modes.capture_cublas``), else :meth:`gemm`, our own kernel."""
        if not modes.capture:
            return a @ b
        calls = self._cublas.get(self.cupy.cuda.Device().id) if modes.capture_cublas else None
        if (calls is not None and a.ndim == b.ndim == 2 and a.dtype == b.dtype
                and a.dtype in (np.float32, np.float64)):
            return calls.matmul(a, b)
        return self.gemm(a, b)

    def cublas_recordable(self) -> bool:
        """Whether cuBLAS's products can be recorded in a CUDA graph on the current GPU: the first
        call makes a cuBLAS handle of our own there, with its workspace (``cublas_calls.py``),
        kept for the life of the process. False, once said in the log, where no usable cuBLAS
        library is found: captured steps then use :meth:`gemm`."""
        device = self.cupy.cuda.Device().id
        if device not in self._cublas:
            library, calls, why = cublas_calls.load_library(), None, "no cuBLAS library found"
            try:
                calls = None if library is None else cublas_calls.CublasCalls(library, self.cupy)
            except (AttributeError, cublas_calls.CublasError) as error:
                why = f"the cuBLAS library cannot serve them ({type(error).__name__}: {error})"
            if calls is None:
                log.warning("%s for CUDA-graph captures: captured steps use tinyflux's own GEMM "
                            "kernel instead", why)
            self._cublas[device] = calls
        return self._cublas[device] is not None

    def im2col(self, x, kernel: tuple, stride: tuple, pad: tuple) -> Columns:
        """The plain columns (C, *K, N, *Q), whatever the stride, in one launch."""
        n, c, *sizes = x.shape
        out = _output_shape(sizes, kernel, stride, pad)
        col = self.cupy.empty((c, *kernel, n, *out), dtype=x.dtype)
        g = self._geometry(x.shape, _element_strides(x), kernel, stride, pad, out)
        self._launch("im2col", x.dtype, col.size, (x, col, g))
        return Columns(col, (n, *out), tuple(x.shape), kernel, stride, pad, shifted=False)

    def col2im(self, gcol, columns: Columns):
        """gx (N, C, *S) as a view of channel-major memory."""
        x_shape, kernel, stride, pad = columns.x_shape, columns.kernel, columns.stride, columns.pad
        n, c, *sizes = x_shape
        out = _output_shape(sizes, kernel, stride, pad)
        # (C, *K, N, *Q); already contiguous when it comes from a matmul
        gcol = self.cupy.ascontiguousarray(gcol)
        gx = self.cupy.empty((c, n, *sizes), dtype=gcol.dtype)  # (C, N, *S)
        g = self._geometry(x_shape, [0] * len(x_shape), kernel, stride, pad, out)  # x is not read
        self._launch("col2im", gcol.dtype, gx.size, (gcol, gx, g))
        return _channels_first_view(gx)

    def maxpool(self, x, window: tuple, stride: tuple):
        """y (N, C, *Q) as a channel-major view; argmax (C,
        N, *Q) int32, the window offset of each maximum."""
        n, c, *sizes = x.shape
        out = _output_shape(sizes, window, stride, (0,) * len(window))
        y = self.cupy.empty((c, n, *out), dtype=x.dtype)
        argmax = self.cupy.empty((c, n, *out), dtype=self.cupy.int32)
        g = self._geometry(x.shape, _element_strides(x), window, stride, (0,) * len(window), out)
        self._launch("maxpool", x.dtype, y.size, (x, y, argmax, g))
        return _channels_first_view(y), MaxPoolSaved(tuple(x.shape), window, stride, argmax)

    def maxpool_backward(self, gy, saved: MaxPoolSaved):
        """gx (N, C, *S) as a channel-major view: each output's
        gradient sent to the input that won its window."""
        x_shape, window, stride, argmax = saved
        n, c, *sizes = x_shape
        # (N, C, *Q) -> (C, N, *Q), free if channel-major
        gy_cn = self.cupy.ascontiguousarray(_channels_first_view(gy))
        gx = self.cupy.empty((c, n, *sizes), dtype=gy.dtype)
        g = self._geometry(x_shape, [0] * len(x_shape), window, stride, (0,) * len(window),
                           argmax.shape[2:])
        self._launch("maxpool_backward", gy.dtype, gx.size, (gy_cn, argmax, gx, g))
        return _channels_first_view(gx)

    def bias_relu(self, x, b):
        """relu(x + b) with b (C,) broadcast along axis 1,
        in one launch; the output keeps x's memory order."""
        shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...)
        y = self.cupy.empty_like(x)  # same strides as x: channel-major stays channel-major
        # v != v is true for NaN alone: a NaN stays NaN, as NumPy's maximum(v, 0) leaves it
        kernel = self._kernel("tinyflux_bias_relu", "T x, T b", "T y",
                              ELEMENTWISE_BODIES["tinyflux_bias_relu"])
        kernel(x, b.reshape(shape), y)
        return y

    def relu_backward(self, gy, y):
        """gy where y > 0, else 0, in one launch; the result keeps y's memory order."""
        gx = self.cupy.empty_like(y)
        # gy times a 0/1 mask, as NumPy computes it: a
        # NaN gradient stays NaN even where the mask is 0
        self._kernel("tinyflux_relu_backward", "T gy, T y", "T gx",
                     ELEMENTWISE_BODIES["tinyflux_relu_backward"])(gy, y, gx)
        return gx

    def count_step(self, hyper) -> None:
        """t <- t + 1 in GPU memory, in a single thread."""
        self.function("count_step")((1,), (1,), (hyper,))

    def adam_update(self, p, g, m, v, hyper) -> None:
        """One Adam step over p, g, m, v, in place, reading
        (lr, beta1, beta2, eps, t) from GPU memory.

        The kernel reads g[i] as a flat array: a gradient that is a strided
        view (a convolution's weight gradient is a transposed one) is made
        contiguous first, or the kernel would read the wrong numbers."""
        if g.dtype != p.dtype:
            raise ValueError(f"adam_update: a {g.dtype} gradient for a {p.dtype} parameter")
        g = self.cupy.ascontiguousarray(g)
        self._launch("adam", p.dtype, p.size, (p, g, m, v, hyper, np.int64(p.size)))

    def gemm(self, a, b):
        """a @ b for 2-D arrays (M, K) @ (K, N) -> (M, N), with
        tinyflux's own kernel (see ``gemm`` in kernels.cu).

        The kernel reads both operands as one type, so mixed types are first promoted as ``a @ b``
        would (float32 with float64 gives float64); other types than those two are refused.
        """
        (m, k), (k_b, n) = a.shape, b.shape
        if k != k_b:
            raise ValueError(f"gemm: inner sizes differ: {a.shape} @ {b.shape}")
        dtype = np.result_type(a.dtype, b.dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError("gemm: the kernel multiplies float32 or float64, "
                            f"got {a.dtype} @ {b.dtype}")
        a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
        splits, chunk = gemm_splits(m, n, k)
        values = (m, n, k, *_element_strides(a), *_element_strides(b), splits, chunk)
        sizes = self._device(("sizes", *values), lambda: np.array(values, dtype=np.int64))
        c = self.cupy.empty((m, n), dtype=a.dtype)
        if c.size == 0:
            return c
        # partial sums, one per range
        out = c if splits == 1 else self.cupy.empty((splits, m, n), dtype=a.dtype)
        self.function("gemm",
                      a.dtype)((gemm_blocks(m, n, splits),), (GEMM_TILE * GEMM_TILE,),
                               (a, b, out, sizes))
        if splits > 1:
            self._launch("sum_splits", a.dtype, c.size,
                         (out, c, np.int64(splits), np.int64(c.size)))
        return c


class RocmOps(CudaOps):
    """CudaOps for AMD GPUs, through CuPy's ROCm build, where ``cupy.cuda.runtime.is_hip`` is true.

    That build keeps CuPy's names and compiles the same ``kernels.cu`` with
    hipRTC (AMD's clang) instead of NVRTC, so only the compiler's side
    differs. What makes the text portable: it uses no warp-level
    intrinsics (an AMD wavefront has 64 threads, not 32), no ``#include``
    (CuPy removes them before hipRTC, which cannot follow include paths in
    older ROCm), and blocks of 256 threads, which AMD GPUs allow.

    - The options: ``compile_options``, inherited, since hipRTC takes the
      same ``-std=c++17`` as NVRTC and picks the GPU's architecture itself
      (the tests pass them to hipcc). CuPy adds
      ``-fcuda-flush-denormals-to-zero`` on HIP, so numbers below 1.2e-38 in
      float32 become 0 there and not on NVIDIA GPUs or with NumPy.
    - CUDA graphs (``--graph``) are HIP graphs there: not tried; captures use the own GEMM
      (hipBLAS's workspace in a HIP graph is not tried either).

    What has run: the suite compiles the kernels with these options with
    ``hipcc`` for an MI200 (gfx90a) and a Radeon RX 6000 (gfx1030). No AMD
    GPU has run them; until one has, ``TINYFLUX_CUDA_KERNELS=0`` (CuPy's own
    operations only) is the safer first run, and the two should agree.
    """

    def cublas_recordable(self) -> bool:
        """False: a captured step keeps to the own GEMM on ROCm (see the class docstring)."""
        return False
