"""CUDA kernels for the GPU path: im2col, col2im, max-pool forward and backward, bias + ReLU, Adam.

Why own kernels when CuPy already runs every op? Each CuPy call costs the CPU
5 to 30 microseconds to launch, and a kernel of one MNIST step runs for only a
few: on an H100 a step's GPU work was 0.43 ms against 2.7 ms of wall time. The
step is launch-bound. The NumPy-style code issues
one slice copy per kernel offset in im2col (9 for a 3x3 kernel), one per pass
and offset in max-pool, several for bias + ReLU and for each Adam update.
Here each of those is one launch.

The four index-heavy kernels are plain CUDA C++ in :data:`SOURCE`, each a
grid-stride loop with one thread per *output* element, so no two threads
write the same place and no atomics are needed (col2im and the pooling
backward *gather* their sums instead of scattering them). That also makes
them runnable on a CPU: ``tests/test_cuda_kernels.py`` compiles the same
source with a C++ compiler (a block of four CPU threads) and compares it
with the NumPy code, and compiles it with nvcc where nvcc exists.

Every spatial input is treated as 3-D (D, H, W); a 2-D image has D = 1 and a
1-D sequence D = H = 1. The sizes, strides and paddings travel in one small
int64 array, ``g``, whose fields are named in :data:`GEOMETRY` (the C
source's ``Geometry`` struct is generated from the same list, so Python and
C cannot disagree on the order). The input may be any strided view (such as
the channel-major view a convolution returns): its element strides are part
of ``g``. Outputs are written channel-major, (C, N, ...), and returned as
(N, C, ...) views, as the NumPy code does.

For CUDA-graph capture (``tinyflux/graph.py``), where cuBLAS cannot run, there
is also a GEMM (tiled in shared memory, with long sums split across blocks)
and an Adam update that reads its hyperparameters from GPU memory.

They run by default on CuPy arrays (``backend.cuda_kernels`` is the switch;
``TINYFLUX_CUDA_KERNELS=0`` turns them off). On an H100 the whole test suite,
including the CuPy-against-NumPy parity tests, passes with and without them.

This module never imports CuPy itself; it gets it from ``backend``.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend

# Fields of the geometry array g: batch, channels, input D/H/W, kernel (window) D/H/W,
# output D/H/W, stride D/H/W, padding D/H/W, the input's element strides for N, C, D, H, W, and
# NARROW: 1 when every index the kernel computes fits in 32 bits (see "Index arithmetic" in SOURCE).
GEOMETRY = ("N", "C", "D", "H", "W", "KD", "KH", "KW", "OD", "OH", "OW",
            "SD", "SH", "SW", "PD", "PH", "PW", "XN", "XC", "XD", "XH", "XW", "NARROW")

# In C, Geometry<I> holds the same fields as integers of type I, read from g in this order:
# generated from GEOMETRY, so that Python and C cannot disagree on the order.
_GEOMETRY_STRUCT = (
    "template <typename I>\nstruct Geometry {\n    I " + ", ".join(GEOMETRY) + ";\n"
    "    __device__ explicit Geometry(const long long* g)\n        : "
    + ", ".join(f"{name}((I)g[{i}])" for i, name in enumerate(GEOMETRY)) + " {}\n};\n"
    f"#define G_NARROW g[{GEOMETRY.index('NARROW')}]\n")
NARROW_LIMIT = 2**31 - 2**25  # below INT_MAX by more than a grid-stride step (65535 blocks x 256 threads)

THREADS = 256  # per block; the grid-stride loops cover the rest
GEMM_TILE = 16  # gemm's tiles are GEMM_TILE x GEMM_TILE outputs, one block of GEMM_TILE**2 threads each
GEMM_BLOCKS = 528  # gemm splits long sums until it has about this many blocks: 4 per H100 multiprocessor
GEMM_MAX_SPLITS = 64  # and into at most this many ranges, which sum_splits then adds up

# (#ifndef: the CPU emulation in tests/test_cuda_kernels.py compiles smaller tiles)
_CONSTANTS = f"#define THREADS {THREADS}\n#ifndef GEMM_TILE\n#define GEMM_TILE {GEMM_TILE}\n#endif\n"
SOURCE = _GEOMETRY_STRUCT + _CONSTANTS + r"""
// One thread per output element, in a grid-stride loop: thread t handles elements t, t + T, t + 2T, ...
// for T threads in all; I is the integer type of the index.
#define GRID_STRIDE_LOOP(I, i, total) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (I)blockDim.x * gridDim.x)

// Index arithmetic: each of the four kernels below splits every flat index into coordinates with
// about eight divisions. A 64-bit division costs the GPU several times the instructions of a 32-bit
// one: on an H100 these kernels took 0.26 ms of a captured MNIST step with 64-bit indices only, and
// 0.16 ms with 32-bit ones (docs/results/h100). So each kernel's body is a template on the index
// type I, and the kernel runs it with 32-bit ints when g says every index fits (NARROW = 1, as for
// MNIST), else with 64-bit ones (a large video batch's columns can pass 2**31 elements).

// Splits a flat index into its three innermost coordinates (d, h, w) for sizes (D, H, W); returns the
// rest of the index, the coordinates outside those three.
template <typename I>
__device__ inline I split3(I i, I D, I H, I W, I* d, I* h, I* w) {
    *w = i % W; i /= W;
    *h = i % H; i /= H;
    *d = i % D;
    return i / D;
}

// col (C, KD, KH, KW, N, OD, OH, OW), contiguous: the value kernel offset (kd, kh, kw) sees at
// output (od, oh, ow) of image n, channel c; 0 where that falls in the padding.
template <typename T, typename I>
__device__ void im2col_body(const T* x, T* col, const Geometry<I> q) {
    const I total = q.C * q.KD * q.KH * q.KW * q.N * q.OD * q.OH * q.OW;
    GRID_STRIDE_LOOP(I, i, total) {
        I od, oh, ow, kd, kh, kw;
        const I r = split3(i, q.OD, q.OH, q.OW, &od, &oh, &ow);  // r = (c, kd, kh, kw) * N + n
        const I n = r % q.N;
        const I c = split3(r / q.N, q.KD, q.KH, q.KW, &kd, &kh, &kw);
        const I d = od * q.SD - q.PD + kd, h = oh * q.SH - q.PH + kh, w = ow * q.SW - q.PW + kw;
        const bool inside = d >= 0 && d < q.D && h >= 0 && h < q.H && w >= 0 && w < q.W;
        col[i] = inside ? x[n * q.XN + c * q.XC + d * q.XD + h * q.XH + w * q.XW] : T(0);
    }
}

template <typename T>
__global__ void im2col(const T* x, T* col, const long long* g) {
    if (G_NARROW) im2col_body<T, int>(x, col, Geometry<int>(g));
    else im2col_body<T, long long>(x, col, Geometry<long long>(g));
}

// The adjoint of im2col. gx (C, N, D, H, W), contiguous: each input element adds up the column
// entries that were copied from it, one per kernel offset that reached it, in increasing offset order.
template <typename T, typename I>
__device__ void col2im_body(const T* col, T* gx, const Geometry<I> q) {
    const I total = q.C * q.N * q.D * q.H * q.W;
    const I positions = q.N * q.OD * q.OH * q.OW;  // columns per kernel offset
    GRID_STRIDE_LOOP(I, i, total) {
        I d, h, w;
        const I r = split3(i, q.D, q.H, q.W, &d, &h, &w);  // r = c * N + n
        const I n = r % q.N;
        const I c = r / q.N;
        T sum = T(0);
        for (I kd = 0; kd < q.KD; ++kd) {
            const I td = d + q.PD - kd;  // = od * SD for the output that reads d through kd
            if (td < 0 || td % q.SD != 0 || td / q.SD >= q.OD) continue;
            for (I kh = 0; kh < q.KH; ++kh) {
                const I th = h + q.PH - kh;
                if (th < 0 || th % q.SH != 0 || th / q.SH >= q.OH) continue;
                for (I kw = 0; kw < q.KW; ++kw) {
                    const I tw = w + q.PW - kw;
                    if (tw < 0 || tw % q.SW != 0 || tw / q.SW >= q.OW) continue;
                    const I offset = (c * q.KD + kd) * q.KH * q.KW + kh * q.KW + kw;
                    const I output = ((n * q.OD + td / q.SD) * q.OH + th / q.SH) * q.OW + tw / q.SW;
                    sum += col[offset * positions + output];
                }
            }
        }
        gx[i] = sum;
    }
}

template <typename T>
__global__ void col2im(const T* col, T* gx, const long long* g) {
    if (G_NARROW) col2im_body<T, int>(col, gx, Geometry<int>(g));
    else col2im_body<T, long long>(col, gx, Geometry<long long>(g));
}

// y and argmax (C, N, OD, OH, OW), contiguous: the largest value of each window and where it was
// (kd * KH * KW + kh * KW + kw). A strict > keeps the first maximum in row-major order on ties.
template <typename T, typename I>
__device__ void maxpool_body(const T* x, T* y, int* argmax, const Geometry<I> q) {
    const I total = q.C * q.N * q.OD * q.OH * q.OW;
    GRID_STRIDE_LOOP(I, i, total) {
        I od, oh, ow;
        const I r = split3(i, q.OD, q.OH, q.OW, &od, &oh, &ow);  // r = c * N + n
        const I n = r % q.N;
        const I c = r / q.N;
        const T* corner = x + n * q.XN + c * q.XC + od * q.SD * q.XD + oh * q.SH * q.XH + ow * q.SW * q.XW;
        T best = corner[0];
        int where = 0;
        for (I kd = 0; kd < q.KD; ++kd)
            for (I kh = 0; kh < q.KH; ++kh)
                for (I kw = 0; kw < q.KW; ++kw) {
                    const T value = corner[kd * q.XD + kh * q.XH + kw * q.XW];
                    if (value > best) {
                        best = value;
                        where = (int)((kd * q.KH + kh) * q.KW + kw);
                    }
                }
        y[i] = best;
        argmax[i] = where;
    }
}

template <typename T>
__global__ void maxpool(const T* x, T* y, int* argmax, const long long* g) {
    if (G_NARROW) maxpool_body<T, int>(x, y, argmax, Geometry<int>(g));
    else maxpool_body<T, long long>(x, y, argmax, Geometry<long long>(g));
}

// gx (C, N, D, H, W), contiguous, from gy and argmax (C, N, OD, OH, OW): each input element adds the
// gradients of the windows that contain it and chose it.
template <typename T, typename I>
__device__ void maxpool_backward_body(const T* gy, const int* argmax, T* gx, const Geometry<I> q) {
    const I total = q.C * q.N * q.D * q.H * q.W;
    GRID_STRIDE_LOOP(I, i, total) {
        I d, h, w;
        const I cn = split3(i, q.D, q.H, q.W, &d, &h, &w);  // c * N + n: gy and argmax share it
        // outputs whose window [o * S, o * S + K) contains the position: first = ceil((p - K + 1) / S)
        const I d0 = d >= q.KD ? (d - q.KD) / q.SD + 1 : 0, d1 = d / q.SD < q.OD ? d / q.SD : q.OD - 1;
        const I h0 = h >= q.KH ? (h - q.KH) / q.SH + 1 : 0, h1 = h / q.SH < q.OH ? h / q.SH : q.OH - 1;
        const I w0 = w >= q.KW ? (w - q.KW) / q.SW + 1 : 0, w1 = w / q.SW < q.OW ? w / q.SW : q.OW - 1;
        T sum = T(0);
        for (I od = d0; od <= d1; ++od)
            for (I oh = h0; oh <= h1; ++oh)
                for (I ow = w0; ow <= w1; ++ow) {
                    const I o = ((cn * q.OD + od) * q.OH + oh) * q.OW + ow;
                    const I here = ((d - od * q.SD) * q.KH + (h - oh * q.SH)) * q.KW + (w - ow * q.SW);
                    if (argmax[o] == here) sum += gy[o];
                }
        gx[i] = sum;
    }
}

template <typename T>
__global__ void maxpool_backward(const T* gy, const int* argmax, T* gx, const long long* g) {
    if (G_NARROW) maxpool_backward_body<T, int>(gy, argmax, gx, Geometry<int>(g));
    else maxpool_backward_body<T, long long>(gy, argmax, gx, Geometry<long long>(g));
}

// out (M, N), contiguous: out[i, j] = sum over k of a[i, k] * b[k, j], for use inside a CUDA-graph
// capture, where cuBLAS refuses to run (outside a capture, tinyflux calls cuBLAS).
// s = (M, N, K, a's row and column strides, b's row and column strides, splits, chunk), strides in
// elements, so a transposed view is read without a copy.
//
// Tiled: one block of GEMM_TILE x GEMM_TILE threads computes one GEMM_TILE x GEMM_TILE tile of out,
// one output per thread. It walks along k in steps of GEMM_TILE: the block copies a GEMM_TILE-square
// piece of a and one of b into shared memory, then each thread adds GEMM_TILE products from there.
// Every number read from global memory thus serves GEMM_TILE outputs instead of one. On an H100 the
// untiled version (one thread per output reading its whole row and column) took 0.66 ms of a 1.0 ms
// captured MNIST step, this one 0.37 ms of 0.64 ms (docs/results/h100). More outputs per thread
// would be the next step: each shared-memory read would then serve several multiply-adds.
//
// Split k: a convolution's weight gradient has few outputs and long sums (16 x 9 outputs, each a sum
// over 100,352 positions, for the first MNIST layer): one tile, one block, and the GPU would idle.
// So k is cut into `splits` ranges of `chunk`; each (tile, range) pair is a block of its own and
// writes its partial sums to out[split] (out is then (splits, M, N)), and sum_splits adds them up,
// in a fixed order, so that the result does not change from run to run.
template <typename T>
__global__ void gemm(const T* a, const T* b, T* out, const long long* s) {
    __shared__ T a_tile[GEMM_TILE][GEMM_TILE + 1];  // a_tile[r][k] = a[row0 + r, k0 + k]; +1: no bank conflicts
    __shared__ T b_tile[GEMM_TILE][GEMM_TILE + 1];  // b_tile[k][c] = b[k0 + k, col0 + c]
    const long long M = s[0], N = s[1], K = s[2], splits = s[7], chunk = s[8];
    const long long tile_rows = (M + GEMM_TILE - 1) / GEMM_TILE, tile_cols = (N + GEMM_TILE - 1) / GEMM_TILE;
    const int ty = threadIdx.x / GEMM_TILE, tx = threadIdx.x % GEMM_TILE;  // this thread's place in the tile
    // Copy each tile so that neighbouring threads (consecutive tx) read neighbouring addresses:
    // along k when k is the array's contiguous axis (a plain a, a transposed b), else along the tile.
    const bool a_along_k = s[4] <= s[3], b_along_k = s[5] <= s[6];
    for (long long task = blockIdx.x; task < tile_rows * tile_cols * splits; task += gridDim.x) {  // grid-stride
        const long long split = task / (tile_rows * tile_cols), tile = task % (tile_rows * tile_cols);
        const long long row0 = tile / tile_cols * GEMM_TILE, col0 = tile % tile_cols * GEMM_TILE;
        const long long k_begin = split * chunk, k_end = k_begin + chunk < K ? k_begin + chunk : K;
        T sum = T(0);
        for (long long k0 = k_begin; k0 < k_end; k0 += GEMM_TILE) {
            // thread (ty, tx) copies one number of each tile; outside the matrices, a zero
            const int ar = a_along_k ? ty : tx, ak = a_along_k ? tx : ty;
            const int bk = b_along_k ? tx : ty, bc = b_along_k ? ty : tx;
            a_tile[ar][ak] = row0 + ar < M && k0 + ak < k_end ? a[(row0 + ar) * s[3] + (k0 + ak) * s[4]] : T(0);
            b_tile[bk][bc] = k0 + bk < k_end && col0 + bc < N ? b[(k0 + bk) * s[5] + (col0 + bc) * s[6]] : T(0);
            __syncthreads();
            for (int k = 0; k < GEMM_TILE; ++k) sum += a_tile[ty][k] * b_tile[k][tx];
            __syncthreads();  // the tiles are refilled next round
        }
        if (row0 + ty < M && col0 + tx < N) out[(split * M + row0 + ty) * N + col0 + tx] = sum;
    }
}

// c[i] = partial[0, i] + partial[1, i] + ... for partial (splits, n): the last step of a split gemm.
template <typename T>
__global__ void sum_splits(const T* partial, T* c, long long splits, long long n) {
    GRID_STRIDE_LOOP(long long, i, n) {
        T sum = T(0);
        for (long long split = 0; split < splits; ++split) sum += partial[split * n + i];
        c[i] = sum;
    }
}

// One Adam step over n numbers, in place. The hyperparameters live in device memory,
// hyper = (lr, beta1, beta2, eps, t), because a captured graph replays the kernel arguments it was
// captured with: values read from memory can change between replays, arguments cannot.
// count_step runs first, in a single thread, and advances t for the step.
__global__ void count_step(double* hyper) {
    if (blockIdx.x == 0 && threadIdx.x == 0) hyper[4] += 1.0;
}

template <typename T>
__global__ void adam(T* p, const T* g, T* m, T* v, const double* hyper, long long n) {
    const double lr = hyper[0], b1 = hyper[1], b2 = hyper[2], eps = hyper[3], t = hyper[4];
    const double correction2 = sqrt(1.0 - pow(b2, t));
    const T step = T(lr * correction2 / (1.0 - pow(b1, t))), eps_hat = T(eps * correction2);
    GRID_STRIDE_LOOP(long long, i, n) {
        const T grad = g[i];
        const T mean = m[i] + T(1.0 - b1) * (grad - m[i]);
        const T square = v[i] + T(1.0 - b2) * (grad * grad - v[i]);
        m[i] = mean;
        v[i] = square;
        p[i] -= step * mean / (sqrt(square) + eps_hat);
    }
}
"""

KERNELS = ("im2col", "col2im", "maxpool", "maxpool_backward", "gemm", "sum_splits", "adam")  # float and double
PLAIN_KERNELS = ("count_step",)  # not templates
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def geometry(x_shape, x_strides, kernel, stride, pad, out) -> np.ndarray:
    """The int64 array ``g`` for a (N, C, *S) input with 1 to 3 spatial axes, padded out to 3 axes.

    ``x_strides`` are in elements (NumPy's ``strides`` divided by the item size).
    """
    d = len(kernel)
    missing = 3 - d  # a 2-D image has D = 1, a 1-D sequence D = H = 1
    n, c, *sizes = x_shape
    xn, xc, *spatial_strides = x_strides
    values = ([n, c] + [1] * missing + list(sizes) + [1] * missing + list(kernel) + [1] * missing + list(out)
              + [1] * missing + list(stride) + [0] * missing + list(pad) + [xn, xc] + [0] * missing
              + list(spatial_strides))
    # the largest index any of the four kernels computes: into the columns (C*K*N*Q elements), into
    # the input or its gradient (N*C*S), or into a strided input view (its farthest element)
    # (math.prod, not np.prod, which costs about 10 us on a short tuple: this function took 36 us with
    # it, 10 us without, on the CPU. _device_geometry caches the result, so it runs once per shape.)
    columns = c * math.prod(kernel) * n * math.prod(out)
    input_extent = 1 + sum((size - 1) * abs(step) for size, step in zip(x_shape, x_strides))
    largest = max(columns, n * c * math.prod(sizes), input_extent, *values)
    return np.array(values + [int(largest < NARROW_LIMIT)], dtype=np.int64)


# -- the CuPy side: compile once, cache, launch ------------------------------------------

_module = None
_geometry_cache: dict = {}


def _function(name: str, dtype=None):
    """The compiled kernel ``name<float>`` or ``name<double>`` (``name`` for a plain one, dtype None).

    The module is compiled on first use."""
    global _module
    cp = backend.array_module("cupy")
    if _module is None:
        expressions = [f"{k}<{t}>" for k in KERNELS for t in _CTYPES.values()] + list(PLAIN_KERNELS)
        _module = cp.RawModule(code=SOURCE, options=("-std=c++17",), name_expressions=expressions)
    if dtype is None:
        return _module.get_function(name)
    if np.dtype(dtype) not in _CTYPES:
        raise TypeError(f"CUDA kernels: float32 or float64 arrays expected, got {dtype}")
    return _module.get_function(f"{name}<{_CTYPES[np.dtype(dtype)]}>")


def _device_geometry(x_shape, x_strides, kernel, stride, pad, out):
    """``geometry(...)`` on the GPU, computed and copied there once per distinct call and then kept
    (a few hundred bytes each): a copy to the GPU costs microseconds and is refused inside a CUDA-graph
    capture, and the same few shapes come back at every training step."""
    key = ("geometry", tuple(x_shape), tuple(x_strides), tuple(kernel), tuple(stride), tuple(pad), tuple(out))
    if key not in _geometry_cache:
        _geometry_cache[key] = backend.array_module("cupy").asarray(geometry(*key[1:]))
    return _geometry_cache[key]


def _device_sizes(values: tuple):
    """A tuple of integers as an int64 array on the GPU, copied there once and kept, like the geometry."""
    key = ("sizes", *values)
    if key not in _geometry_cache:
        _geometry_cache[key] = backend.array_module("cupy").asarray(np.array(values, dtype=np.int64))
    return _geometry_cache[key]


def _launch(name: str, dtype, total: int, args) -> None:
    blocks = max(1, min(-(-total // THREADS), 65535))  # ceiling division, capped: the loop strides on
    _function(name, dtype)((blocks,), (THREADS,), args)


def _element_strides(array) -> list:
    return [s // array.itemsize for s in array.strides]


def _channels_first_view(array):
    """(C, N, *S) contiguous memory seen as (N, C, *S)."""
    return array.swapaxes(0, 1)


def _output_shape(sizes, kernel, stride, pad) -> tuple:
    return tuple((s + 2 * p - k) // st + 1 for s, k, st, p in zip(sizes, kernel, stride, pad))


def im2col(x, kernel: tuple, stride: tuple, pad: tuple):
    """Same result as ``convolution.im2col``: col (C, *K, N, *Q), in one launch."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x.shape
    out = _output_shape(sizes, kernel, stride, pad)
    col = cp.empty((c, *kernel, n, *out), dtype=x.dtype)
    g = _device_geometry(x.shape, _element_strides(x), kernel, stride, pad, out)
    _launch("im2col", x.dtype, col.size, (x, col, g))
    return col


def col2im(gcol, x_shape: tuple, kernel: tuple, stride: tuple, pad: tuple):
    """Same result as ``convolution.col2im``: gx (N, C, *S) as a view of channel-major memory."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x_shape
    out = _output_shape(sizes, kernel, stride, pad)
    gcol = cp.ascontiguousarray(gcol)  # (C, *K, N, *Q); already contiguous when it comes from a matmul
    gx = cp.empty((c, n, *sizes), dtype=gcol.dtype)  # (C, N, *S)
    g = _device_geometry(x_shape, [0] * len(x_shape), kernel, stride, pad, out)  # x is not read
    _launch("col2im", gcol.dtype, gx.size, (gcol, gx, g))
    return _channels_first_view(gx)


def maxpool(x, window: tuple, stride: tuple):
    """y (N, C, *Q) as a channel-major view, and argmax (C, N, *Q) int32: the window offset of each maximum."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x.shape
    out = _output_shape(sizes, window, stride, (0,) * len(window))
    y = cp.empty((c, n, *out), dtype=x.dtype)
    argmax = cp.empty((c, n, *out), dtype=cp.int32)
    g = _device_geometry(x.shape, _element_strides(x), window, stride, (0,) * len(window), out)
    _launch("maxpool", x.dtype, y.size, (x, y, argmax, g))
    return _channels_first_view(y), argmax


def maxpool_backward(gy, argmax, x_shape: tuple, window: tuple, stride: tuple):
    """gx (N, C, *S) as a channel-major view: each output's gradient sent to the input that won its window."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x_shape
    gy_cn = cp.ascontiguousarray(_channels_first_view(gy))  # (N, C, *Q) -> (C, N, *Q); free if channel-major
    gx = cp.empty((c, n, *sizes), dtype=gy.dtype)
    g = _device_geometry(x_shape, [0] * len(x_shape), window, stride, (0,) * len(window), argmax.shape[2:])
    _launch("maxpool_backward", gy.dtype, gx.size, (gy_cn, argmax, gx, g))
    return _channels_first_view(gx)


def gemm_splits(m: int, n: int, k: int) -> tuple:
    """(splits, chunk): how gemm cuts the sum over k, so that a product with few outputs still has
    about GEMM_BLOCKS blocks of work (at most GEMM_MAX_SPLITS ranges, each at least 4 tiles long)."""
    tiles = max(1, -(-m // GEMM_TILE) * -(-n // GEMM_TILE))  # ceiling divisions
    splits = max(1, min(-(-GEMM_BLOCKS // tiles), GEMM_MAX_SPLITS, k // (4 * GEMM_TILE)))
    chunk = max(1, -(-k // splits))
    chunk = -(-chunk // GEMM_TILE) * GEMM_TILE  # whole tiles per range
    return max(1, -(-k // chunk)), chunk


def gemm(a, b):
    """a @ b for 2-D arrays (M, K) @ (K, N) -> (M, N), with tinyflux's own kernel (see ``gemm`` in SOURCE)."""
    cp = backend.array_module("cupy")
    (m, k), (k_b, n) = a.shape, b.shape
    if k != k_b:
        raise ValueError(f"gemm: inner sizes differ: {a.shape} @ {b.shape}")
    splits, chunk = gemm_splits(m, n, k)
    sizes = _device_sizes((m, n, k, *_element_strides(a), *_element_strides(b), splits, chunk))
    c = cp.empty((m, n), dtype=a.dtype)
    if c.size == 0:
        return c
    out = c if splits == 1 else cp.empty((splits, m, n), dtype=a.dtype)  # partial sums, one (M, N) per range
    tasks = -(-m // GEMM_TILE) * -(-n // GEMM_TILE) * splits
    _function("gemm", a.dtype)((min(tasks, 65535),), (GEMM_TILE * GEMM_TILE,), (a, b, out, sizes))
    if splits > 1:
        _launch("sum_splits", a.dtype, c.size, (out, c, np.int64(splits), np.int64(c.size)))
    return c


def adam(p, g, m, v, hyper) -> None:
    """t <- t + 1, then one Adam step over flat arrays p, g, m, v, in place.

    hyper = (lr, beta1, beta2, eps, t), float64 on the GPU: a captured graph reads it at every replay.
    """
    _function("count_step")((1,), (1,), (hyper,))
    _launch("adam", p.dtype, p.size, (p, g, m, v, hyper, np.int64(p.size)))


# -- element-wise kernels: CuPy writes the loop, we write one line of its body -------------

_elementwise: dict = {}


def _kernel(name: str, inputs: str, outputs: str, body: str):
    if name not in _elementwise:
        _elementwise[name] = backend.array_module("cupy").ElementwiseKernel(inputs, outputs, body, name)
    return _elementwise[name]


def bias_relu(x, b):
    """relu(x + b) with b (C,) broadcast along axis 1, in one launch; the output keeps x's memory order."""
    shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...)
    y = backend.array_module("cupy").empty_like(x)  # same strides as x: channel-major stays channel-major
    _kernel("tinyflux_bias_relu", "T x, T b", "T y", "T v = x + b; y = v > T(0) ? v : T(0)")(x, b.reshape(shape), y)
    return y


def relu_backward(gy, y):
    """gy where y > 0, else 0, in one launch; the result keeps y's memory order (channel-major after a conv)."""
    gx = backend.array_module("cupy").empty_like(y)
    _kernel("tinyflux_relu_backward", "T gy, T y", "T gx", "gx = y > T(0) ? gy : T(0)")(gy, y, gx)
    return gx


def adam_update(p, g, m, v, step_size: float, eps: float, beta1: float, beta2: float) -> None:
    """One Adam step over p, g, m, v, in place, in one launch (see ``optim.Adam`` for the formula).

    The hyperparameters travel as kernel arguments, computed on the host each step. A captured
    graph cannot take new arguments at each replay, so ``tf.capture`` uses :func:`adam` instead,
    the same update reading them from GPU memory.

    1 - beta1 and 1 - beta2 are computed here, in double precision, and then rounded to the array's
    dtype, as NumPy does with ``(1 - b2) * array``. Computing them in the kernel in float32
    (1.0f - 0.999f) is 1.3e-5 off, and Adam amplifies that: after 5 MNIST steps some weights
    differed from the NumPy run by 9e-3 (three whole steps), which the H100 showed.
    """
    body = """
        m = m + rate1 * (g - m);
        v = v + rate2 * (g * g - v);
        p = p - step * m / (sqrt(v) + eps);
    """
    kernel = _kernel("tinyflux_adam", "T g, T step, T eps, T rate1, T rate2", "T p, T m, T v", body)
    dtype = p.dtype.type
    kernel(g, dtype(step_size), dtype(eps), dtype(1.0 - beta1), dtype(1.0 - beta2), p, m, v)
