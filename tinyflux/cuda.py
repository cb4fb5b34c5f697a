"""CUDA kernels for the GPU path: im2col, col2im, max-pool forward and backward, bias + ReLU, Adam.

Why own kernels when CuPy already runs every op? Each CuPy call costs the CPU
5 to 30 microseconds to launch, and the GPU work of one MNIST step is only
tens of microseconds: the step is launch-bound. The NumPy-style code issues
one slice copy per kernel offset in im2col (9 for a 3x3 kernel), one per pass
and offset in max-pool, several for bias + ReLU and for each Adam update.
Here each of those is one launch.

The four index-heavy kernels are plain CUDA C++ in :data:`SOURCE`, each a
grid-stride loop with one thread per *output* element, so no two threads
write the same place and no atomics are needed (col2im and the pooling
backward *gather* their sums instead of scattering them). That also makes
them runnable on a CPU: ``tests/test_cuda_kernels.py`` compiles the same
source with a C++ compiler (one "thread" doing every index) and compares it
with the NumPy code, and compiles it with nvcc where nvcc exists.

Every spatial input is treated as 3-D (D, H, W); a 2-D image has D = 1 and a
1-D sequence D = H = 1. The sizes, strides and paddings travel in one small
int64 array, ``g``, whose fields are named in :data:`GEOMETRY` (the C source's
``G_N``, ``G_C``, ... macros are generated from the same list, so Python and
C cannot disagree on the order). The input may be any strided view (such as
the channel-major view a convolution returns): its element strides are part
of ``g``. Outputs are written channel-major, (C, N, ...), and returned as
(N, C, ...) views, as the NumPy code does.

Status: these kernels are used only when ``TINYFLUX_CUDA_KERNELS=1`` is set
(see ``backend.cuda_kernels``), because they have not yet run on a GPU: the
CPU emulation and nvcc check them, a GPU has not.

This module never imports CuPy itself; it gets it from ``backend``.
"""
from __future__ import annotations

import numpy as np

from . import backend

# Fields of the geometry array g: batch, channels, input D/H/W, kernel (window) D/H/W,
# output D/H/W, stride D/H/W, padding D/H/W, and the input's element strides for N, C, D, H, W.
GEOMETRY = ("N", "C", "D", "H", "W", "KD", "KH", "KW", "OD", "OH", "OW",
            "SD", "SH", "SW", "PD", "PH", "PW", "XN", "XC", "XD", "XH", "XW")

_MACROS = "".join(f"#define G_{name} g[{i}]\n" for i, name in enumerate(GEOMETRY))

THREADS = 256  # per block, a power of two (gemm_long halves it); the grid-stride loops cover the rest

SOURCE = _MACROS + f"#define THREADS {THREADS}\n" + r"""
// One thread per output element, in a grid-stride loop: thread t handles elements t, t + T, t + 2T, ...
// for T threads in all. 64-bit indices: a video batch's columns can pass 2**31 elements.
#define GRID_STRIDE_LOOP(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (long long)blockDim.x * gridDim.x)

// Splits a flat index into its three innermost coordinates (d, h, w) for sizes (D, H, W); returns the
// rest of the index, the coordinates outside those three.
__device__ inline long long split3(long long i, long long D, long long H, long long W,
                                   long long* d, long long* h, long long* w) {
    *w = i % W; i /= W;
    *h = i % H; i /= H;
    *d = i % D;
    return i / D;
}

// col (C, KD, KH, KW, N, OD, OH, OW), contiguous: the value kernel offset (kd, kh, kw) sees at
// output (od, oh, ow) of image n, channel c; 0 where that falls in the padding.
template <typename T>
__global__ void im2col(const T* x, T* col, const long long* g) {
    const long long total = G_C * G_KD * G_KH * G_KW * G_N * G_OD * G_OH * G_OW;
    GRID_STRIDE_LOOP(i, total) {
        long long od, oh, ow, kd, kh, kw;
        const long long r = split3(i, G_OD, G_OH, G_OW, &od, &oh, &ow);  // r = (c, kd, kh, kw) * N + n
        const long long n = r % G_N;
        const long long c = split3(r / G_N, G_KD, G_KH, G_KW, &kd, &kh, &kw);
        const long long d = od * G_SD - G_PD + kd, h = oh * G_SH - G_PH + kh, w = ow * G_SW - G_PW + kw;
        const bool inside = d >= 0 && d < G_D && h >= 0 && h < G_H && w >= 0 && w < G_W;
        col[i] = inside ? x[n * G_XN + c * G_XC + d * G_XD + h * G_XH + w * G_XW] : T(0);
    }
}

// The adjoint of im2col. gx (C, N, D, H, W), contiguous: each input element adds up the column
// entries that were copied from it, one per kernel offset that reached it, in increasing offset order.
template <typename T>
__global__ void col2im(const T* col, T* gx, const long long* g) {
    const long long total = G_C * G_N * G_D * G_H * G_W;
    const long long positions = G_N * G_OD * G_OH * G_OW;  // columns per kernel offset
    GRID_STRIDE_LOOP(i, total) {
        long long d, h, w;
        const long long r = split3(i, G_D, G_H, G_W, &d, &h, &w);  // r = c * N + n
        const long long n = r % G_N;
        const long long c = r / G_N;
        T sum = T(0);
        for (long long kd = 0; kd < G_KD; ++kd) {
            const long long td = d + G_PD - kd;  // = od * SD for the output that reads d through kd
            if (td < 0 || td % G_SD != 0 || td / G_SD >= G_OD) continue;
            for (long long kh = 0; kh < G_KH; ++kh) {
                const long long th = h + G_PH - kh;
                if (th < 0 || th % G_SH != 0 || th / G_SH >= G_OH) continue;
                for (long long kw = 0; kw < G_KW; ++kw) {
                    const long long tw = w + G_PW - kw;
                    if (tw < 0 || tw % G_SW != 0 || tw / G_SW >= G_OW) continue;
                    const long long offset = (c * G_KD + kd) * G_KH * G_KW + kh * G_KW + kw;
                    const long long output = ((n * G_OD + td / G_SD) * G_OH + th / G_SH) * G_OW + tw / G_SW;
                    sum += col[offset * positions + output];
                }
            }
        }
        gx[i] = sum;
    }
}

// y and argmax (C, N, OD, OH, OW), contiguous: the largest value of each window and where it was
// (kd * KH * KW + kh * KW + kw). A strict > keeps the first maximum in row-major order on ties.
template <typename T>
__global__ void maxpool(const T* x, T* y, int* argmax, const long long* g) {
    const long long total = G_C * G_N * G_OD * G_OH * G_OW;
    GRID_STRIDE_LOOP(i, total) {
        long long od, oh, ow;
        const long long r = split3(i, G_OD, G_OH, G_OW, &od, &oh, &ow);  // r = c * N + n
        const long long n = r % G_N;
        const long long c = r / G_N;
        const T* corner = x + n * G_XN + c * G_XC + od * G_SD * G_XD + oh * G_SH * G_XH + ow * G_SW * G_XW;
        T best = corner[0];
        int where = 0;
        for (long long kd = 0; kd < G_KD; ++kd)
            for (long long kh = 0; kh < G_KH; ++kh)
                for (long long kw = 0; kw < G_KW; ++kw) {
                    const T value = corner[kd * G_XD + kh * G_XH + kw * G_XW];
                    if (value > best) {
                        best = value;
                        where = (int)((kd * G_KH + kh) * G_KW + kw);
                    }
                }
        y[i] = best;
        argmax[i] = where;
    }
}

// gx (C, N, D, H, W), contiguous, from gy and argmax (C, N, OD, OH, OW): each input element adds the
// gradients of the windows that contain it and chose it.
template <typename T>
__global__ void maxpool_backward(const T* gy, const int* argmax, T* gx, const long long* g) {
    const long long total = G_C * G_N * G_D * G_H * G_W;
    GRID_STRIDE_LOOP(i, total) {
        long long d, h, w;
        const long long cn = split3(i, G_D, G_H, G_W, &d, &h, &w);  // c * N + n: gy and argmax share it
        // outputs whose window [o * S, o * S + K) contains the position: first = ceil((p - K + 1) / S)
        const long long d0 = d >= G_KD ? (d - G_KD) / G_SD + 1 : 0, d1 = d / G_SD < G_OD ? d / G_SD : G_OD - 1;
        const long long h0 = h >= G_KH ? (h - G_KH) / G_SH + 1 : 0, h1 = h / G_SH < G_OH ? h / G_SH : G_OH - 1;
        const long long w0 = w >= G_KW ? (w - G_KW) / G_SW + 1 : 0, w1 = w / G_SW < G_OW ? w / G_SW : G_OW - 1;
        T sum = T(0);
        for (long long od = d0; od <= d1; ++od)
            for (long long oh = h0; oh <= h1; ++oh)
                for (long long ow = w0; ow <= w1; ++ow) {
                    const long long o = ((cn * G_OD + od) * G_OH + oh) * G_OW + ow;
                    const long long here = ((d - od * G_SD) * G_KH + (h - oh * G_SH)) * G_KW + (w - ow * G_SW);
                    if (argmax[o] == here) sum += gy[o];
                }
        gx[i] = sum;
    }
}

// c (M, N), contiguous: c[i, j] = sum over k of a[i, k] * b[k, j]. s = (M, N, K, a's row and column
// strides, b's row and column strides), in elements, so a transposed view is read without a copy.
// The plainest GEMM there is, one thread per output, for use inside a CUDA-graph capture, where
// cuBLAS refuses to run; outside a capture, tinyflux calls cuBLAS.
template <typename T>
__global__ void gemm(const T* a, const T* b, T* c, const long long* s) {
    const long long M = s[0], N = s[1], K = s[2];
    GRID_STRIDE_LOOP(i, M * N) {
        const T* a_row = a + (i / N) * s[3];
        const T* b_column = b + (i % N) * s[6];
        T sum = T(0);
        for (long long k = 0; k < K; ++k) sum += a_row[k * s[4]] * b_column[k * s[5]];
        c[i] = sum;
    }
}

// The same product when there are few outputs and long sums, as in a convolution's weight gradient
// (M * N = 144 outputs, each a sum over K = 100,352 positions, for the first MNIST layer): one output
// per thread would leave the GPU nearly idle. Here a whole block works on one output: each thread
// adds up every blockDim-th term, then the block adds its partial sums pairwise in shared memory.
template <typename T>
__global__ void gemm_long(const T* a, const T* b, T* c, const long long* s) {
    __shared__ T partial[THREADS];
    const long long M = s[0], N = s[1], K = s[2];
    for (long long i = blockIdx.x; i < M * N; i += gridDim.x) {  // grid-stride, one output per block
        const T* a_row = a + (i / N) * s[3];
        const T* b_column = b + (i % N) * s[6];
        T sum = T(0);
        for (long long k = threadIdx.x; k < K; k += blockDim.x) sum += a_row[k * s[4]] * b_column[k * s[5]];
        partial[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {  // blockDim.x is a power of two
            if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0) c[i] = partial[0];
        __syncthreads();  // partial is refilled for the next output
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
    GRID_STRIDE_LOOP(i, n) {
        const T grad = g[i];
        const T mean = m[i] + T(1.0 - b1) * (grad - m[i]);
        const T square = v[i] + T(1.0 - b2) * (grad * grad - v[i]);
        m[i] = mean;
        v[i] = square;
        p[i] -= step * mean / (sqrt(square) + eps_hat);
    }
}
"""

KERNELS = ("im2col", "col2im", "maxpool", "maxpool_backward", "gemm", "gemm_long", "adam")  # float and double
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
    return np.array(values, dtype=np.int64)


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


def _device_geometry(values: np.ndarray):
    """The geometry on the GPU, copied there once per distinct shape and kept (a few hundred bytes each)."""
    key = values.tobytes()
    if key not in _geometry_cache:
        _geometry_cache[key] = backend.array_module("cupy").asarray(values)
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
    g = _device_geometry(geometry(x.shape, _element_strides(x), kernel, stride, pad, out))
    _launch("im2col", x.dtype, col.size, (x, col, g))
    return col


def col2im(gcol, x_shape: tuple, kernel: tuple, stride: tuple, pad: tuple):
    """Same result as ``convolution.col2im``: gx (N, C, *S) as a view of channel-major memory."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x_shape
    out = _output_shape(sizes, kernel, stride, pad)
    gcol = cp.ascontiguousarray(gcol)  # (C, *K, N, *Q); already contiguous when it comes from a matmul
    gx = cp.empty((c, n, *sizes), dtype=gcol.dtype)  # (C, N, *S)
    g = _device_geometry(geometry(x_shape, [0] * len(x_shape), kernel, stride, pad, out))  # x is not read
    _launch("col2im", gcol.dtype, gx.size, (gcol, gx, g))
    return _channels_first_view(gx)


def maxpool(x, window: tuple, stride: tuple):
    """y (N, C, *Q) as a channel-major view, and argmax (C, N, *Q) int32: the window offset of each maximum."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x.shape
    out = _output_shape(sizes, window, stride, (0,) * len(window))
    y = cp.empty((c, n, *out), dtype=x.dtype)
    argmax = cp.empty((c, n, *out), dtype=cp.int32)
    g = _device_geometry(geometry(x.shape, _element_strides(x), window, stride, (0,) * len(window), out))
    _launch("maxpool", x.dtype, y.size, (x, y, argmax, g))
    return _channels_first_view(y), argmax


def maxpool_backward(gy, argmax, x_shape: tuple, window: tuple, stride: tuple):
    """gx (N, C, *S) as a channel-major view: each output's gradient sent to the input that won its window."""
    cp = backend.array_module("cupy")
    n, c, *sizes = x_shape
    gy_cn = cp.ascontiguousarray(_channels_first_view(gy))  # (N, C, *Q) -> (C, N, *Q); free if channel-major
    gx = cp.empty((c, n, *sizes), dtype=gy.dtype)
    g = _device_geometry(geometry(x_shape, [0] * len(x_shape), window, stride, (0,) * len(window),
                                  argmax.shape[2:]))
    _launch("maxpool_backward", gy.dtype, gx.size, (gy_cn, argmax, gx, g))
    return _channels_first_view(gx)


def gemm(a, b):
    """a @ b for 2-D arrays (M, K) @ (K, N) -> (M, N), with tinyflux's own kernel (see ``gemm`` in SOURCE)."""
    cp = backend.array_module("cupy")
    (m, k), (k_b, n) = a.shape, b.shape
    if k != k_b:
        raise ValueError(f"gemm: inner sizes differ: {a.shape} @ {b.shape}")
    c = cp.empty((m, n), dtype=a.dtype)
    sizes = _device_geometry(np.array([m, n, k, *_element_strides(a), *_element_strides(b)], dtype=np.int64))
    if k >= 1024 and m * n <= 65536:  # few outputs, long sums: a block per output
        blocks = min(m * n, 65535)
        _function("gemm_long", a.dtype)((blocks,), (THREADS,), (a, b, c, sizes))
    else:  # a thread per output
        _launch("gemm", a.dtype, c.size, (a, b, c, sizes))
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
