"""CPU kernels compiled by Numba for the convolutions and the max-pooling after them.

``NumbaOps`` is ``NumpyOps`` with a layer's convolution(-pooling) done by
Numba's kernels: columns in cache-sized blocks (``numba_blocks.py``,
``numba_conv.py``) forward, and backward either the blocks' GEMMs or, for
pooling windows of 8 positions or more, the direct kernels here.
``backends.ops_for`` gives it to NumPy arrays when Numba is installed (``pip
install 'tinyflux[fast]'``) and the environment variable
``TINYFLUX_CPU_KERNELS`` is not ``0``. Without Numba the NumPy code runs
everything: it is the reference, and the tests compare the two
(``tests/test_numba_ops.py``).

Why direct kernels backward. Forward, every output of the convolution is
needed for the max over its window:

    y[n, o, q] = sum over (c, k) of w[o, c, k] * x_padded[n, c, q + k]
    pooled[n, o, u] = max over window offsets r of y[n, o, m*u + r]      (windows of m)

and GEMMs on columns compute them fastest. Backward, only each window's
winner q* = m*u + r* got a gradient, so one output in prod(m) (1 in 8 for
2x2x2 windows) counts. A GEMM would multiply all of them, zeros included;
the kernels here visit the winners alone:

    gw[o, c, k]             += gy[n, o, u] * x_padded[n, c, q* + k]
    gx_padded[n, c, q* + k] += gy[n, o, u] * w[o, c, k]

Every shape is lifted to 3-D (an image is a clip of one frame, with a kernel
and window of 1 along time), so one kernel of each kind serves 1-D, 2-D and
3-D. In the flattened padded clip (C, T, H, W) a kernel term (c, a, b, e) is
a fixed distance from the output it serves, ``offsets[j]``, and a window
offset r is another, ``window_offsets[r]``: the loops add them to the
window's first position instead of computing four indices per term.

Each gradient number is summed by one thread in a fixed order, so the results
do not depend on the number of threads, and a resumed run repeats its numbers
(``numba_blocks`` adds fixed groups of blocks in a fixed order, to the same end).
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import NamedTuple

import numba
import numpy as np

from . import numba_blocks, numba_conv, numba_norm
from .geometry import lifted_to_3d, memory_order, output_size, pooled_inside, pooled_to_batch_first
from .numpy_ops import NumpyOps

log = logging.getLogger("tinyflux")


@numba.njit(nogil=True, cache=True)
def _weight_grad(x, gy, winner, offsets, window_offsets, window, gw_rows, start, stop):
    """gw_rows (O, C*prod(K)), rows start..stop, from the pooled gradient gy and the winners
    (N, O, U1, U2, U3)."""
    n_clips, _, _, height, width = x.shape
    _, n_out, u_t, u_h, u_w = gy.shape
    win_t, win_h, win_w = window
    clips = x.reshape(n_clips, -1)  # (N, C*T*H*W)
    # each output channel writes its own row: no two threads add to one number
    for o in range(start, stop):
        row = np.zeros(len(offsets), dtype=gw_rows.dtype)
        for n in range(n_clips):
            for t in range(u_t):
                for h in range(u_h):
                    for q in range(u_w):
                        g = gy[n, o, t, h, q]
                        if g == 0:  # a ReLU after the pooling often zeroes it: nothing to add
                            continue
                        # the window's first output
                        corner = (t * win_t * height + h * win_h) * width + q * win_w
                        start = corner + window_offsets[winner[n, o, t, h, q]]  # its winner
                        for j in range(len(offsets)):
                            row[j] += g * clips[n, start + offsets[j]]
        gw_rows[o] = row


@numba.njit(nogil=True, cache=True)
def _input_grad(gy, winner, w_cols, offsets, window_offsets, window, gx, start, stop):
    """gx (N, C, T, H, W) padded, zero on entry, clips start..stop: each
    winner's gradient times the weights, added back."""
    n_clips, _, _, height, width = gx.shape
    _, n_out, u_t, u_h, u_w = gy.shape
    win_t, win_h, win_w = window
    grads = gx.reshape(n_clips, -1)  # (N, C*T*H*W), a view: the sums land in gx
    for n in range(start, stop):  # each clip writes its own gradient
        clip = grads[n]
        for o in range(n_out):
            for t in range(u_t):
                for h in range(u_h):
                    for q in range(u_w):
                        g = gy[n, o, t, h, q]
                        if g == 0:
                            continue
                        # the window's first output
                        corner = (t * win_t * height + h * win_h) * width + q * win_w
                        start = corner + window_offsets[winner[n, o, t, h, q]]  # its winner
                        for j in range(len(offsets)):
                            clip[start + offsets[j]] += g * w_cols[o, j]


class DirectSaved(NamedTuple):
    """What :meth:`NumbaOps.conv_pool` keeps for its backward pass (sizes lifted to 3-D)."""

    x_padded: np.ndarray  # (N, C, T, H, W) with the padding
    # (N, O, U1, U2, U3): which window offset won, in row-major order (a byte up to 256)
    winner: np.ndarray
    # (C*prod(K),): where each kernel term (c, a, b, e) reads, from the window's position
    offsets: np.ndarray
    # (prod(window),): where each window offset is, from the window's first position
    window_offsets: np.ndarray
    window: tuple  # (3,)
    pad: tuple  # (3,)
    x_shape: tuple  # (N, C, *S) of the input
    x_order: tuple  # the input's axes from the outermost in memory; its gradient gets the same
    # (N, O, *U): relu(pooled + bias) where the op adds a bias and a ReLU, else None
    activated: object = None


KERNEL_DTYPES = (np.float32, np.float64)  # the dtypes the kernels are compiled for


class NumbaOps(NumpyOps):
    """NumpyOps, with the convolution-pooling of a layer done by Numba's kernels.

    Once a kernel has run, matrix products run on one BLAS thread. After each product
    OpenBLAS keeps its other threads spinning for a while, waiting for the next one; the
    kernels' threads, started meanwhile, then shared the cores with them, and a video step
    whose dense layer was big enough for two BLAS threads got much slower
    (docs/results/cpu_speed_round3). The products left beside these kernels (dense layers)
    are small, and those of ``numba_blocks`` run on one BLAS thread per lane.
    """

    def __init__(self):
        self.kernels_ran = False
        self._blas = None  # threadpoolctl's handle on the BLAS libraries, made on first use

    def matmul(self, a, b):
        if not self.kernels_ran:
            return super().matmul(a, b)
        with self._one_blas_thread():
            return super().matmul(a, b)

    def _one_blas_thread(self):
        """A context in which BLAS runs on one thread (nothing changes without threadpoolctl)."""
        if self._blas is None:
            self._blas = _blas_controls()
        return self._blas.limit(limits=1) if self._blas else contextlib.nullcontext()

    def limit_threads(self, threads: int) -> None:
        """Run the kernels on at most ``threads`` threads
        (one share of the cores per process, as for BLAS)."""
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))

    def conv(self, x, w, b, stride: tuple, pad: tuple):
        """A stride-1 convolution with columns one cache-sized block at a time
        (``numba_conv.conv_blocks``), never the whole batch's (for 3 x 27 kernel
        terms of a clip, 81 times the clip). Other strides, and dtypes the kernels
        are not compiled for, as NumpyOps; so are weights or a bias of another dtype than x,
        whose sum NumPy promotes (the blocks compute in x's dtype), and empty outputs."""
        same_dtype = w.dtype == x.dtype and (b is None or b.dtype == x.dtype)
        sizes = [output_size(s, k, 1, p) for s, k, p in zip(x.shape[2:], w.shape[2:], pad)]
        if (any(s != 1 for s in stride) or x.dtype not in KERNEL_DTYPES or not same_dtype
                or min(sizes) <= 0):
            return super().conv(x, w, b, stride, pad)
        self.kernels_ran = True
        with self._one_blas_thread():
            return numba_conv.conv_blocks(x, w, b, pad, numba.get_num_threads())

    def conv_backward(self, gy, w, saved, needs: tuple):
        if not isinstance(saved, numba_conv.ConvBlockSaved):  # NumpyOps made it
            return super().conv_backward(gy, w, saved, needs)
        with self._one_blas_thread():
            return numba_conv.conv_blocks_backward(gy, w, saved, needs, numba.get_num_threads())

    def conv_pool(self, x, w, b, pad: tuple, window: tuple):
        """(pooled (N, O, *U), saved): maxpool(conv(x, w)) for a stride-1 convolution; with a bias b
        (O,), relu(that + b). Dtypes other than float32 and float64 (the kernels are compiled for
        those two) go to NumpyOps's columns. The others take ``numba_blocks``' columns, one
        cache-sized block at a time, forward; backward, the route is chosen here:

        - windows of 8 positions or more (2x2x2): the direct kernels above, which visit one output
          in prod(window), the winners, where the blocks' GEMMs would multiply every position;
        - smaller windows (MNIST's 2x2): the blocks' GEMMs, whose cost the zeros of three
          positions in four do not outweigh.

        The direct kernels need the padded input and each window's winner as (N, O, U1, U2, U3);
        ``_direct_saved`` makes them from what the blocks computed.
        """
        if x.dtype not in KERNEL_DTYPES:
            return super().conv_pool(x, w, b, pad, window)
        self.kernels_ran = True
        lanes = numba.get_num_threads()
        with self._one_blas_thread():
            pooled, saved = numba_blocks.conv_pool_blocks(x, w, pad, window, lanes, b)
        if math.prod(window) < 8:
            return pooled, saved
        return pooled, _direct_saved(x, w, pad, saved, pooled if b is not None else None)

    def conv_pool_backward(self, gy, w, saved: DirectSaved, needs: tuple):
        """(gx (N, C, *S) or None, gw (O, C, *K) or None), and gb (O,) or None where the op added a
        bias, from the gradient gy (N, O, *U) of its output."""
        if not isinstance(saved, (DirectSaved, numba_blocks.BlockSaved)):  # NumpyOps made it
            return super().conv_pool_backward(gy, w, saved, needs)
        lanes = numba.get_num_threads()
        if isinstance(saved, numba_blocks.BlockSaved):
            with self._one_blas_thread():
                return numba_blocks.conv_pool_blocks_backward(gy, w, saved, needs, lanes)
        gb = None
        if saved.activated is not None:  # as BiasReLU.backward
            gy, gb = self.bias_relu_backward(gy, saved.activated, needs[2])
        n, o = gy.shape[:2]
        # (N, O, *U) -> (N, O, U1, U2, U3)
        gy3 = np.ascontiguousarray(gy.reshape(saved.winner.shape))
        window3 = np.array(saved.window)
        gx = gw = None
        if needs[0]:
            gx_padded = np.zeros_like(saved.x_padded)  # (N, C, T+2p, H+2p, W+2p)
            w_cols = np.ascontiguousarray(w.reshape(o, -1))  # (O, C, *K) -> (O, C*prod(K))
            numba_blocks.run_jobs(_input_grad, n, lanes, gy3, saved.winner, w_cols, saved.offsets,
                                  saved.window_offsets, window3, gx_padded)
            sizes3 = lifted_to_3d(saved.x_shape[2:], 1)
            interior = tuple(slice(p, p + s) for p, s in zip(saved.pad, sizes3))
            inside = (slice(None), slice(None)) + interior
            # in the input's memory order, as col2im_pooled returns it (see there)
            order = saved.x_order
            # x's axes in memory order
            gx = np.empty(tuple(saved.x_shape[axis] for axis in order), dtype=gy.dtype)
            # -> (N, C, *S) view
            gx = gx.transpose(tuple(order.index(axis) for axis in range(len(order))))
            gx[...] = gx_padded[inside].reshape(saved.x_shape)  # (N, C, T, H, W) -> (N, C, *S)
        if needs[1]:
            gw_rows = np.empty((o, len(saved.offsets)), dtype=w.dtype)
            numba_blocks.run_jobs(_weight_grad, o, lanes, saved.x_padded, gy3, saved.winner,
                                  saved.offsets, saved.window_offsets, window3, gw_rows)
            gw = gw_rows.reshape(w.shape)  # (O, C*prod(K)) -> (O, C, *K)
        return (gx, gw) if saved.activated is None else (gx, gw, gb)

    def channel_moments(self, x):
        if x.dtype not in KERNEL_DTYPES:
            return super().channel_moments(x)
        self.kernels_ran = True
        return numba_norm.channel_moments(x, numba.get_num_threads())

    def batch_norm_pool(self, x, mean, inv_std, gamma, beta, window: tuple, relu: bool):
        """The three ops in one pass over memory (``numba_norm``), for the dtypes the kernels
        are compiled for; others as NumpyOps."""
        if x.dtype not in KERNEL_DTYPES:
            return super().batch_norm_pool(x, mean, inv_std, gamma, beta, window, relu)
        self.kernels_ran = True
        return numba_norm.batch_norm_pool(x, mean, inv_std, gamma, beta, window, relu,
                                          numba.get_num_threads())

    def batch_norm_pool_backward(self, gy, saved, training: bool, needs: tuple):
        if not isinstance(saved, numba_norm.NormPoolSaved):  # NumpyOps made it
            return super().batch_norm_pool_backward(gy, saved, training, needs)
        return numba_norm.batch_norm_pool_backward(gy, saved, training, needs,
                                                   numba.get_num_threads())


def _direct_saved(x, w, pad: tuple, saved: numba_blocks.BlockSaved, activated) -> DirectSaved:
    """What the direct backward kernels read, from the input and what
    ``conv_pool_blocks`` kept: the input padded, and the winners in (N, O, U1, U2, U3)."""
    geometry, d = saved.geometry, w.ndim - 2
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel3, pad3 = lifted_to_3d(w.shape[2:], 1), lifted_to_3d(pad, 0)
    window3, sizes3 = lifted_to_3d(geometry.window, 1), lifted_to_3d(x.shape[2:], 1)
    padded = tuple(s + 2 * p for s, p in zip(sizes3, pad3))
    x_padded = np.zeros((n, c) + padded, dtype=x.dtype)  # (N, C, T+2p, H+2p, W+2p)
    inside = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(pad3, sizes3))
    # (N, C, *S) -> (N, C, T, H, W)
    x_padded[inside] = x.reshape((n, c) + sizes3)
    # (O, E) -> (O, U1, N, L2, ...), the pooled outputs alone -> (N, O, U1, U2, ...)
    winner = saved.winner.reshape((o,) + geometry.extended)[pooled_inside(geometry)]
    winner = np.ascontiguousarray(winner.transpose(pooled_to_batch_first(d)))
    # (N, O, *U) -> (N, O, U1, U2, U3)
    winner = winner.reshape((n, o) + lifted_to_3d(geometry.pooled, 1))
    return DirectSaved(x_padded, winner, _flat_offsets((c,) + kernel3, padded),
                       _flat_offsets((1,) + window3, padded), window3, pad3, tuple(x.shape),
                       memory_order(x), activated)


def _blas_controls():
    """threadpoolctl's handle on the loaded BLAS libraries,
    or False (after a warning) without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        log.warning("threadpoolctl is not installed: BLAS threads may slow down tinyflux's Numba "
                    "kernels (pip install 'tinyflux[fast]')")
        return False
    return ThreadpoolController().select(user_api="blas")


def _flat_offsets(sizes: tuple, padded: tuple) -> np.ndarray:
    """The distance in a flattened padded clip (C, T, H,
    W) of every index in ``sizes`` (row-major order)."""
    # (T*H*W, H*W, W, 1)
    strides = (math.prod(padded),) + tuple(math.prod(padded[i + 1:]) for i in range(3))
    grids = np.indices(sizes).reshape(len(sizes), -1)  # (4, prod(sizes)): every (c, a, b, e)
    return np.asarray(strides, dtype=np.int64) @ grids
