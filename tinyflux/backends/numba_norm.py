"""Batch normalisation, ReLU and max-pooling in one pass over memory (Numba).

``NumbaOps.batch_norm_pool`` computes what ``NumpyOps.batch_norm_pool`` does,
maxpool(relu(gamma x_hat + beta)) with windows that tile, with
x_hat = (x - mean) inv_std, and its backward pass, with the formulas of
``tinyflux/functional/normalization.py``. For one channel c, with
a = gamma inv_std and b = beta - mean a (so that gamma x_hat + beta = a x + b):

    forward:  pooled[u] = max over the window offsets r of relu(a x[k u + r] + b)
              winner[u] = the first r that reaches it
    backward: g = gy[u] at x's position k u + winner[u] where pooled[u] > 0, 0 elsewhere
              g_beta = sum(g),  g_gamma = sum(g x_hat)
              gx = a / m (m g - g_beta - x_hat g_gamma)      (training; else gx = a g)

Why one pass. After a convolution of a clip the three ops each read and write
a full-size array (for 16 channels of 8 clips of 16x112x112, 100 MB): the
normalised values, their ReLU, the pooling's input gradient, the ReLU's
gradient, x_hat. Here the forward pass reads x twice (its moments, then the
pooling) and writes only the pooled output and a byte per window saying which
offset won; the backward pass reads x twice (the two sums, then gx) and
writes gx. g is zero except at one position per window, so the sums visit
the winners alone.

Why float64 sums. A channel has millions of values (1.6 million for the
first layer above); float32 running sums would lose digits. The moments are
sums of x - s, s the first value of the channel, which keeps the variance
E[(x - s)^2] - E[x - s]^2 from cancelling when the mean is far from 0.

Each slab (one example's channel) is summed by one thread in one order, and
the slabs' sums are added in example order, so the results do not depend on
the number of threads. Every shape is lifted to 3-D, as in ``numba_ops``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .buffers import page_aligned
from .geometry import lifted_to_3d, memory_order
from .numba_blocks import run_jobs


# "reassoc" lets LLVM sum a row in several SIMD lanes at once; the order then
# depends on the processor's vector width, never on the number of threads
@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _slab_moments(planes, index, shift, sums, start, stop):
    """sums[n, c] = (sum of x[n, c] - shift[c], sum of its squares), in float64, for the
    slabs n * C + c in start..stop."""
    channels = index.shape[1]
    for job in range(start, stop):
        n, c = job // channels, job % channels
        s = np.float64(shift[c])
        total = 0.0
        squares = 0.0
        for t in range(index.shape[2]):
            plane = planes[index[n, c, t]]
            for h in range(plane.shape[0]):
                row = plane[h]
                for w in range(row.shape[0]):
                    d = np.float64(row[w]) - s
                    total += d
                    squares += d * d
        sums[n, c, 0] = total
        sums[n, c, 1] = squares


# The three kernels below read a row of x at every k3-th position (k3 the window's width).
# LLVM makes SIMD code of such a loop only when it knows the stride when compiling, so each
# kernel calls its row loop with the literal 2 (the usual window) where k3 is 2, and with k3
# as it comes otherwise; ``inline`` puts the loop into the kernel, where the literal is seen.

@numba.njit(inline="always")
def _pool_offset(z, stride, e, r, best, won):
    """best, won (U3,) for window offset r, whose values are z[u3 * stride + e]: strict, so a
    tie keeps the earlier offset; a NaN wins and stays, as np.maximum keeps it. Selects, not
    "if larger: store": every store happens, so the loop becomes SIMD code, and no branch
    depends on the data (as ``numba_blocks._pool``)."""
    for u3 in range(best.shape[0]):
        value = z[u3 * stride + e]
        larger = (value > best[u3]) | ((value != value) & (best[u3] == best[u3]))
        best[u3] = value if larger else best[u3]
        won[u3] = r if larger else won[u3]


@numba.njit(inline="always")
def _winner_dot(row, stride, e, r, g, won, center):
    """The sum of g[u3] (row[u3 * stride + e] - center) over the windows that offset r won."""
    total = 0.0
    for u3 in range(g.shape[0]):
        d = np.float64(row[u3 * stride + e]) - center
        total += np.float64(g[u3]) * d if won[u3] == r else 0.0
    return total


@numba.njit(inline="always")
def _add_at_winners(target, stride, e, r, g, won, scale):
    """target[u3 * stride + e] += scale g[u3] where offset r won window u3."""
    zero = target.dtype.type(0)
    for u3 in range(g.shape[0]):
        target[u3 * stride + e] += scale * g[u3] if won[u3] == r else zero


@numba.njit(inline="always")
def _gradient_row(grads, out, relu, g):
    """g (U3,) = grads where the ReLU was on (its output out > 0), else 0: the gradient
    that reaches each window's winner."""
    zero = g.dtype.type(0)
    for u3 in range(g.shape[0]):
        g[u3] = grads[u3] if (not relu) | (out[u3] > zero) else zero


@numba.njit(nogil=True, cache=True)
def _forward(planes, index, a, b, window, relu, pooled, winner, start, stop):
    """pooled, winner (N, C, U1, U2, U3), for the jobs (n * C + c) * U1 + u1 in start..stop: the
    largest relu(a x + b) of each window of x (its planes, see _planes), and its offset in the
    window (row-major; the first on ties, as NumpyOps.maxpool picks). Row by row: a x + b with
    the ReLU into a scratch row, then each window offset against the best so far."""
    k1, k2, k3 = window[0], window[1], window[2]
    channels, frames, width = index.shape[1], pooled.shape[2], pooled.shape[4]
    # the ReLU as a floor: 0 with it, -inf (no floor) without
    floor = planes.dtype.type(0) if relu else planes.dtype.type(-np.inf)
    for job in range(start, stop):
        n, c, u1 = job // (channels * frames), job // frames % channels, job % frames
        scale, offset = a[c], b[c]
        won = np.empty(width, np.int32)
        z = np.empty(planes.shape[2], planes.dtype)
        for u2 in range(pooled.shape[3]):
            best = pooled[n, c, u1, u2]
            for u3 in range(width):
                best[u3] = -np.inf  # the first offset always wins against it (or ties at -inf)
                won[u3] = 0
            r = 0
            for i in range(k1):
                for j in range(k2):
                    row = planes[index[n, c, u1 * k1 + i], u2 * k2 + j]
                    for w in range(row.shape[0]):
                        value = row[w] * scale + offset
                        z[w] = value if (value > floor) | (value != value) else floor
                    for e in range(k3):
                        if k3 == 2:
                            _pool_offset(z, 2, e, r, best, won)
                        else:
                            _pool_offset(z, k3, e, r, best, won)
                        r += 1
            target = winner[n, c, u1, u2]
            for u3 in range(width):
                target[u3] = won[u3]


# "reassoc": the two sums run in SIMD lanes (see _slab_moments)
@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _winner_sums(planes, index, gy, pooled, winner, window, mean, inv_std, relu, sums, start,
                 stop):
    """sums[n, c] = (sum of g, sum of g x_hat) over slab (n, c) in float64, for the slabs
    n * C + c in start..stop, g being gy at each window's winner where the ReLU was on
    (pooled > 0) and 0 elsewhere."""
    k1, k2, k3 = window[0], window[1], window[2]
    channels, width = index.shape[1], gy.shape[4]
    for job in range(start, stop):
        n, c = job // channels, job % channels
        center = np.float64(mean[c])
        g = np.empty(width, gy.dtype)
        total = 0.0
        weighted = 0.0  # sum of g (x - mean)
        for u1 in range(gy.shape[2]):
            for u2 in range(gy.shape[3]):
                _gradient_row(gy[n, c, u1, u2], pooled[n, c, u1, u2], relu, g)
                won = winner[n, c, u1, u2]
                for u3 in range(width):
                    total += np.float64(g[u3])
                r = 0
                for i in range(k1):
                    for j in range(k2):
                        row = planes[index[n, c, u1 * k1 + i], u2 * k2 + j]
                        for e in range(k3):
                            if k3 == 2:
                                weighted += _winner_dot(row, 2, e, r, g, won, center)
                            else:
                                weighted += _winner_dot(row, k3, e, r, g, won, center)
                            r += 1
        sums[n, c, 0] = total
        sums[n, c, 1] = weighted * np.float64(inv_std[c])


@numba.njit(nogil=True, cache=True)
def _input_grad(planes, index, gy, pooled, winner, window, mean, inv_std, gamma, g_beta, g_gamma,
                training, relu, gx_planes, start, stop):
    """gx = a / m (m g - g_beta - x_hat g_gamma) in training, a g otherwise, into gx_planes
    (laid out as x's planes), for the slabs n * C + c in start..stop, row by row: the terms
    every position has, then each winner's own."""
    k1, k2, k3 = window[0], window[1], window[2]
    channels, width = index.shape[1], gy.shape[4]
    m = index.size // channels * planes.shape[1] * planes.shape[2]
    zero = gx_planes.dtype.type(0)
    for job in range(start, stop):
        n, c = job // channels, job % channels
        center, spread = mean[c], inv_std[c]
        scale = gamma[c] * spread
        beta_term = gx_planes.dtype.type(g_beta[c] / m) if training else zero
        gamma_term = gx_planes.dtype.type(g_gamma[c] / m) if training else zero
        g = np.empty(width, gy.dtype)
        for t in range(index.shape[2]):
            for h in range(planes.shape[1]):
                row, target = planes[index[n, c, t], h], gx_planes[index[n, c, t], h]
                for w in range(row.shape[0]):
                    target[w] = -scale * (beta_term + (row[w] - center) * spread * gamma_term)
                u1, u2 = t // k1, h // k2
                if u1 >= gy.shape[2] or u2 >= gy.shape[3]:  # a frame or row in no window
                    continue
                _gradient_row(gy[n, c, u1, u2], pooled[n, c, u1, u2], relu, g)
                won = winner[n, c, u1, u2]
                for e in range(k3):
                    r = ((t % k1) * k2 + h % k2) * k3 + e
                    if k3 == 2:
                        _add_at_winners(target, 2, e, r, g, won, scale)
                    else:
                        _add_at_winners(target, k3, e, r, g, won, scale)


class NormPoolSaved(NamedTuple):
    """What :func:`batch_norm_pool` keeps for its backward pass."""

    planes: np.ndarray  # (P, H, W) and (N, C, T): the input as planes, see _planes
    index: np.ndarray
    order: tuple  # the axes of the lifted input (N, C, T, H, W) in memory order
    x_shape: tuple  # the input's own shape (N, C, *S)
    pooled: np.ndarray  # (N, C, U1, U2, U3): the output
    winner: np.ndarray  # (N, C, U1, U2, U3): which window offset won
    window: np.ndarray  # (3,): the window, lifted
    mean: np.ndarray  # (C,), and the three below
    inv_std: np.ndarray
    gamma: np.ndarray
    relu: bool


def _planes(x):
    """(planes, index, order) for x (N, C, *S): x lifted to (N, C, T, H, W), as its (H, W)
    planes in memory order, planes (P, H, W), with index (N, C, T) saying which plane is which.

    Why planes. The convolution before this op leaves its output laid out (C, T, N, H, W)
    in memory (see ``numba_blocks``), and a kernel that takes a 5-D array in any layout reads
    its rows with a stride known only at run time, which LLVM does not make SIMD code of.
    The planes are a C-contiguous view of the same memory in both layouts, with rows of stride
    1; a layout whose rows are not (H, W) planes is copied first."""
    n, c = x.shape[:2]
    x = x.reshape((n, c) + lifted_to_3d(x.shape[2:], 1))  # (N, C, *S) -> (N, C, T, H, W)
    order = memory_order(x)
    if order[3:] != (3, 4) or not x.transpose(order).flags.c_contiguous:
        x = np.ascontiguousarray(x)
        order = (0, 1, 2, 3, 4)
    # (N, C, T, H, W) -> its memory order -> (P, H, W), a view
    planes = x.transpose(order).reshape((-1,) + x.shape[3:])
    outer = tuple(x.shape[axis] for axis in order[:3])  # (N, C, T) in memory order
    # (N*C*T,) -> outer -> (N, C, T): the plane of each (n, c, t)
    index = np.arange(planes.shape[0]).reshape(outer).transpose(
        tuple(order.index(axis) for axis in range(3)))
    return planes, index, order


def channel_moments(x, lanes: int):
    """(mean, var) (C,) of x (N, C, *S) over all axes but the channels, in x's dtype."""
    planes, index, _ = _planes(x)
    n, c = index.shape[:2]
    shift = np.ascontiguousarray(planes[index[0, :, 0], 0, 0])  # each channel's first value
    sums = np.empty((n, c, 2))
    run_jobs(_slab_moments, n * c, lanes, planes, index, shift, sums)
    m = x.size // c
    total, squares = sums.sum(axis=0).T  # (N, C, 2) -> (C, 2) -> two (C,), in example order
    centred = total / m  # E[x - shift]
    mean = shift + centred
    var = np.maximum(squares / m - centred * centred, 0.0)
    return mean.astype(x.dtype), var.astype(x.dtype)


def batch_norm_pool(x, mean, inv_std, gamma, beta, window: tuple, relu: bool, lanes: int):
    """(pooled (N, C, *U), saved): maxpool(relu(gamma (x - mean) inv_std + beta)), windows
    that tile, in one pass."""
    planes, index, order = _planes(x)
    n, c, d = x.shape[0], x.shape[1], x.ndim - 2
    window3 = np.array(lifted_to_3d(window, 1))
    sizes3 = (index.shape[2],) + planes.shape[1:]  # (T, H, W)
    out3 = tuple(size // k for size, k in zip(sizes3, window3))
    a = (gamma * inv_std).astype(x.dtype)
    b = (beta - mean * a).astype(x.dtype)
    pooled = np.empty((n, c) + out3, dtype=x.dtype)
    winner = np.empty((n, c) + out3, dtype=np.uint8 if math.prod(window) <= 256 else np.int32)
    run_jobs(_forward, n * c * out3[0], lanes, planes, index, a, b, window3, relu, pooled, winner)
    saved = NormPoolSaved(planes, index, order, tuple(x.shape), pooled, winner, window3, mean,
                          inv_std, gamma, relu)
    return pooled.reshape((n, c) + out3[3 - d:]), saved  # (N, C, U1, U2, U3) -> (N, C, *U)


def batch_norm_pool_backward(gy, saved: NormPoolSaved, training: bool, needs: tuple, lanes: int):
    """(gx (N, C, *S), g_gamma (C,), g_beta (C,)), each None where ``needs`` says so."""
    gy3 = np.ascontiguousarray(gy).reshape(saved.pooled.shape)  # (N, C, *U) -> (N, C, U1, U2, U3)
    sums = np.empty(saved.pooled.shape[:2] + (2,))
    slabs = sums.shape[0] * sums.shape[1]
    run_jobs(_winner_sums, slabs, lanes, saved.planes, saved.index, gy3, saved.pooled, saved.winner,
             saved.window, saved.mean, saved.inv_std, saved.relu, sums)
    g_beta, g_gamma = sums.sum(axis=0).T  # (N, C, 2) -> (C, 2) -> two (C,), in example order
    gx = None
    if needs[0]:
        # recycled pages (see buffers.py), laid out as x is
        gx_planes = page_aligned(np, saved.planes.shape, saved.planes.dtype)
        run_jobs(_input_grad, slabs, lanes, saved.planes, saved.index, gy3, saved.pooled,
                 saved.winner, saved.window, saved.mean, saved.inv_std, saved.gamma, g_beta,
                 g_gamma, training, saved.relu, gx_planes)
        lifted = saved.index.shape + saved.planes.shape[1:]  # (N, C, T, H, W)
        # (P, H, W) -> (N, C, T, H, W) in memory order -> (N, C, T, H, W) -> (N, C, *S)
        gx = gx_planes.reshape(tuple(lifted[axis] for axis in saved.order)).transpose(
            tuple(saved.order.index(axis) for axis in range(5))).reshape(saved.x_shape)
    dtype = saved.planes.dtype
    return (gx, g_gamma.astype(dtype) if needs[1] else None,
            g_beta.astype(dtype) if needs[2] else None)
