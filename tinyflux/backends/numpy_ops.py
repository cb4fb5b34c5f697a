"""NumPy implementations of the hot operations, behind one object: ``NumpyOps``.

Every op in tinyflux (``tinyflux/functional``) does its arithmetic itself
when the arithmetic is a line or two of array code, and asks an *ops
object* for the operations that a backend may want to do its own way: the
im2col copies of a convolution and their adjoint, max-pooling forward and
backward, bias + ReLU, ReLU's backward, the matrix product and the Adam
update. ``tinyflux.backends.ops_for(array)`` returns the ops object for an
array: this one for NumPy arrays (and, written against ``xp``, for CuPy
arrays when tinyflux's own CUDA kernels are off), ``CudaOps`` for CuPy
arrays otherwise. An op calls the ops object it gets and never asks what
kind of array it holds; a new backend is a subclass that overrides what it
does differently (see ``tinyflux/backends/__init__.py``).

The math of each operation is in the docstring of the op that uses it
(``tinyflux/functional/convolution.py`` for im2col and pooling,
``tinyflux/optim.py`` for Adam); here is how NumPy does it fast.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

from .arrays import get_array_module
from .buffers import page_aligned
from .geometry import (PoolGeometry, batch_second, channels_first, flat_start, index_along, memory_order,
                       output_size, phase_runs, pool_geometry, pooled_inside, pooled_offsets, window_slice)

# Where Adam's numbers stand in its ``hyper`` array, float64 (lr, beta1, beta2, eps, t); kernels.cu reads the same order
HYPER_LR, HYPER_BETA1, HYPER_BETA2, HYPER_EPS, HYPER_T = range(5)


def im2col(x, kernel: tuple, stride: tuple, pad: tuple):
    """Copy the input patches seen by each kernel offset into a column array.

    Args:
        x: (N, C, *S) array.
    Returns:
        col: (C, *K, N, *Q) array; reshaped to (C*prod(K), N*P) it is the GEMM operand.
    """
    xp = get_array_module(x)
    d = len(kernel)
    n, c, *sizes = x.shape
    out = [output_size(sz, k, st, p) for sz, k, st, p in zip(sizes, kernel, stride, pad)]
    x_cn = x.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S): free view when x is channel-major
    if any(pad):
        padded = xp.zeros((c, n) + tuple(sz + 2 * p for sz, p in zip(sizes, pad)), dtype=x.dtype)
        padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))] = x_cn
    else:
        padded = x_cn
    col = xp.empty((c,) + tuple(kernel) + (n,) + tuple(out), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        source = padded[(slice(None), slice(None)) + tuple(map(window_slice, offset, out, stride))]  # (C, N, *Q)
        col[(slice(None),) + offset] = source
    return col


def col2im(gcol, x_shape: tuple, kernel: tuple, stride: tuple, pad: tuple):
    """Adjoint of :func:`im2col`: add each offset's block of ``gcol`` back onto the input.

    Args:
        gcol: (C, *K, N, *Q) array.
    Returns:
        gx: (N, C, *S), a channel-major view like the conv output.
    """
    xp = get_array_module(gcol)
    d = len(kernel)
    n, c, *sizes = x_shape
    out = gcol.shape[2 + d:]
    padded = xp.zeros((c, n) + tuple(sz + 2 * p for sz, p in zip(sizes, pad)), dtype=gcol.dtype)  # (C, N, *S+2p)
    for offset in itertools.product(*(range(k) for k in kernel)):
        target = padded[(slice(None), slice(None)) + tuple(map(window_slice, offset, out, stride))]  # (C, N, *Q) view
        target += gcol[(slice(None),) + offset]
    inner = padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))]
    return inner.transpose(channels_first(d))  # (C, N, *S) -> (N, C, *S) view


def im2col_shifted(x, kernel: tuple, pad: tuple):
    """im2col for stride 1, where each kernel offset's columns are one contiguous slice.

    Pad the input, flatten each image to one row, and compute outputs for every
    position of the padded grid after the first axis (for 2-D: OH rows of Wp
    columns instead of OW). Then kernel offset (i, j) reads the flat slice that
    starts at i*Wp + j: a long contiguous copy instead of OH*N short strided
    rows, several times faster. The price is Wp - OW extra output columns per
    row (7% more GEMM work for 28x28 images, 29% for 7x7), which
    ``ConvFunction`` cuts away. One spare zero row keeps the last slice inside
    the image.

    Args:
        x: (N, C, *S).
    Returns:
        col: (C, *K, N, E) with E = Q1 * prod(padded S[1:]) extended output positions per image;
        extended: the (N, Q1, *padded S[1:]) shape of those positions.
    """
    xp = get_array_module(x)
    d = len(kernel)
    n, c, *sizes = x.shape
    padded_sizes = [sz + 2 * p for sz, p in zip(sizes, pad)]
    padded = xp.zeros((c, n, padded_sizes[0] + 1, *padded_sizes[1:]), dtype=x.dtype)  # +1: the spare row
    padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))] = \
        x.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S), copied into the zero frame
    flat = padded.reshape(c, n, -1)  # (C, N, S1+1, *S') -> (C, N, F): one row per image
    extended = (n, padded_sizes[0] - kernel[0] + 1, *padded_sizes[1:])
    length = math.prod(extended[1:])  # E
    col = xp.empty((c,) + tuple(kernel) + (n, length), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = flat_start(offset, padded_sizes)
        col[(slice(None),) + offset] = flat[:, :, start:start + length]  # (C, N, E), contiguous runs
    return col, extended


def col2im_shifted(gcol, x_shape: tuple, kernel: tuple, pad: tuple):
    """Adjoint of :func:`im2col_shifted`: gcol (C, *K, N, E) -> gx (N, C, *S), a channel-major view."""
    xp = get_array_module(gcol)
    d = len(kernel)
    n, c, *sizes = x_shape
    padded_sizes = [sz + 2 * p for sz, p in zip(sizes, pad)]
    length = gcol.shape[-1]
    flat = xp.zeros((c, n, (padded_sizes[0] + 1) * math.prod(padded_sizes[1:])), dtype=gcol.dtype)  # (C, N, F)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = flat_start(offset, padded_sizes)
        flat[:, :, start:start + length] += gcol[(slice(None),) + offset]
    padded = flat.reshape(c, n, padded_sizes[0] + 1, *padded_sizes[1:])  # (C, N, F) -> (C, N, S1+1, *S')
    inner = padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))]
    return inner.transpose(channels_first(d))  # (C, N, *S) -> (N, C, *S) view


def phase_planes(x, geometry: PoolGeometry):
    """The padded input x (N, C, *S) split into its k**d phase planes (see :func:`im2col_pooled`), each flattened:
    (C, *k, F) with F = prod(geometry.plane)."""
    xp = get_array_module(x)
    c = geometry.x_shape[1]
    planes = page_aligned(xp, (c,) + geometry.window + geometry.plane, x.dtype, zeros=True)  # (C, *k, L1+1, N, L2, ..)
    copy_into_planes(x, geometry, planes)
    return planes.reshape((c,) + geometry.window + (-1,))  # (C, *k, L1 + 1, N, L2, ...) -> (C, *k, F)


def copy_into_planes(x, geometry: PoolGeometry, planes, channels=slice(None)) -> None:
    """Copy the input x (N, C, *S) into the zero-filled phase planes (C, *k, L1+1, N, L2, ...): the ``channels``
    given (all by default; a thread can fill its share)."""
    d = len(geometry.kernel)
    x_cn = x.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S)
    for plane_part, source in phase_runs(geometry):
        # (C, N, S1', ...) -> (C, S1', N, ...)
        planes[(channels,) + plane_part[1:]] = x_cn[(channels,) + source[1:]].transpose(batch_second(d + 2))


def im2col_pooled(x, geometry: PoolGeometry):
    """im2col for a stride-1 convolution followed by max-pooling with windows of k (stride k).

    The columns are ordered by window offset first: (r, u) instead of q with
    q = k*u + r per axis. The GEMM then writes each window offset's outputs as one
    contiguous block, and pooling is a maximum over k**d whole blocks, with no
    strided access at all. To keep the copies contiguous too, the padded input is
    split into k**d *phase planes* (every k-th position from each phase on) and the
    batch is laid side by side in each plane, (L1 + 1, N, L2, ...), like one wide
    image. Then each (kernel offset, window offset) pair reads one contiguous slice
    of one flattened plane per channel: the trick of :func:`im2col_shifted`, with
    runs as long as the whole batch. Positions that no pooling window uses (the
    last row of a 7x7 output pooled to 3x3) are never computed.

    Args:
        x: (N, C, *S).
    Returns:
        col: (C, *K, *k, E) with E = prod(geometry.extended) positions, (U1, N, L2, ...).
    """
    xp = get_array_module(x)
    c = geometry.x_shape[1]
    flat = phase_planes(x, geometry)  # (C, *k, F)
    length = math.prod(geometry.extended)
    col = page_aligned(xp, (c,) + geometry.kernel + geometry.window + (length,), x.dtype)
    for kk, r, phase, start in pooled_offsets(geometry):
        col[(slice(None),) + kk + r] = flat[(slice(None),) + phase + (slice(start, start + length),)]  # (C, E)
    return col


def col2im_pooled(gcol, geometry: PoolGeometry):
    """Adjoint of :func:`im2col_pooled`: gcol (C, *K, *k, E) -> gx (N, C, *S), laid out in memory as the input."""
    xp = get_array_module(gcol)
    c = geometry.x_shape[1]
    length = gcol.shape[-1]
    flat = page_aligned(xp, (c,) + geometry.window + (math.prod(geometry.plane),), gcol.dtype, zeros=True)  # (C, *k, F)
    for kk, r, phase, start in pooled_offsets(geometry):
        flat[(slice(None),) + phase + (slice(start, start + length),)] += gcol[(slice(None),) + kk + r]
    return gradient_from_planes(flat, geometry)


def gradient_from_planes(flat, geometry: PoolGeometry):
    """Adjoint of :func:`phase_planes`: the gradient of the phase planes, flat (C, *k, F), back to gx (N, C, *S),
    laid out in memory as the input was."""
    gx = input_gradient(geometry, flat.dtype, get_array_module(flat))
    copy_from_planes(flat, geometry, gx)
    return gx


def input_gradient(geometry: PoolGeometry, dtype, xp):
    """Zeros of the input's shape (N, C, *S) and memory order: inputs that no window reads keep 0.

    The input's memory order because the ReLU before this layer multiplies this gradient element by
    element with its own output, which has that order, and NumPy runs such a product many times faster
    when the two arrays are laid out alike.
    """
    order = geometry.x_order
    gx = xp.zeros(tuple(geometry.x_shape[axis] for axis in order), dtype=dtype)  # x's axes in memory order
    return gx.transpose(tuple(order.index(axis) for axis in range(len(order))))  # -> (N, C, *S) view


def copy_from_planes(flat, geometry: PoolGeometry, gx, channels=slice(None)) -> None:
    """Adjoint of :func:`copy_into_planes`: the plane gradient flat (C, *k, F) into gx (N, C, *S), for the
    ``channels`` given."""
    d = len(geometry.kernel)
    planes = flat.reshape((geometry.x_shape[1],) + geometry.window + geometry.plane)  # -> (C, *k, L1+1, N, L2, ..)
    gx_cn = gx.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S) view
    for plane_part, source in phase_runs(geometry):
        # (C, S1', N, ...) -> (C, N, S1', ...)
        gx_cn[(channels,) + source[1:]] = planes[(channels,) + plane_part[1:]].transpose(batch_second(d + 2))


def extended_gradient(gy, geometry: PoolGeometry):
    """The pooled gradient gy (N, O, U1, U2, ...) as (O, U1, N, L2, ...), the layout of the pooled outputs
    computed, with 0 at the extra positions (no window's output)."""
    xp = get_array_module(gy)
    d = len(geometry.kernel)
    gy_ext = xp.empty((gy.shape[1],) + geometry.extended, dtype=gy.dtype)  # (O, U1, N, L2, ...)
    gy_ext[pooled_inside(geometry)] = gy.transpose((1, 2, 0) + tuple(range(3, d + 2)))  # (N, O, U1, ..) -> (O, U1, N, ..)
    for axis in range(3, gy_ext.ndim):  # zero only the extra positions past U2, ...
        gy_ext[index_along(axis, slice(geometry.pooled[axis - 2], None), gy_ext.ndim)] = 0
    return gy_ext


def _maxpool_1d(x, axis: int, k: int, s: int):
    """Max over windows of k positions every s positions along one axis; also which offset won."""
    xp = get_array_module(x)
    out = output_size(x.shape[axis], k, s, 0)
    views = [x[index_along(axis, window_slice(offset, out, s), x.ndim)] for offset in range(k)]  # k views, each (..., out, ...)
    if k == 1:
        return views[0].copy(order="K"), xp.zeros_like(views[0], dtype=xp.uint8)
    y = xp.maximum(views[0], views[1])  # a new array in x's memory order (channel-major after a conv)
    # offset of the maximum in each window: 1 where offset 1 wins; strict, so ties keep offset 0. A bool result
    # seen as uint8 (no copy): dpnp accepts only a bool output for a comparison
    wins = xp.empty_like(y, dtype=bool)
    xp.greater(views[1], views[0], out=wins)
    argmax = wins.view(xp.uint8)
    for offset in range(2, k):  # windows of 3 or more; new arrays, because dpnp has no in-place maximum(y, v, out=y)
        better = views[offset] > y
        y = xp.maximum(y, views[offset])
        # argmax = offset where better, else unchanged. Offsets only grow, so a maximum does it:
        # max(argmax, better * offset). (np.copyto(argmax, offset, where=better) is much slower.)
        argmax = xp.maximum(argmax, better.view(xp.uint8) * xp.uint8(offset))
    return y, argmax


def _maxpool_1d_backward(gy, x, argmax, axis: int, k: int, s: int):
    """Send each output gradient to the input position that won its window (x: the pass's input)."""
    xp = get_array_module(gy)
    n_out = gy.shape[axis]
    tiled = s == k and x.shape[axis] == n_out * k  # windows cover every input position exactly once
    # same memory order as x; where windows skip positions (a floored remainder, a gap) they keep gradient 0
    gx = xp.empty_like(x) if tiled else xp.zeros_like(x)
    targets = [gx[index_along(axis, window_slice(offset, n_out, s), gy.ndim)] for offset in range(k)]
    if k == 2 and s >= k:  # the common 2-wide window: argmax is 0 or 1, so gy * argmax is offset 1's share
        xp.multiply(gy, argmax, out=targets[1])
        xp.subtract(gy, targets[1], out=targets[0])  # and the rest is offset 0's (2 passes instead of 4)
        return gx
    for offset, target in enumerate(targets):
        if s >= k:  # windows do not overlap: each input position receives from one window only
            xp.multiply(gy, argmax == offset, out=target)
        else:
            target += gy * (argmax == offset)
    return gx


class Columns(NamedTuple):
    """What :meth:`NumpyOps.im2col` built, and what the backward pass needs to undo it."""

    col: object  # (C, *K, N, *E): E the positions computed per image, Q or more (see im2col_shifted)
    extended: tuple  # (N, *E)
    x_shape: tuple  # (N, C, *S) of the input
    kernel: tuple
    stride: tuple
    pad: tuple
    shifted: bool  # built by im2col_shifted: E has extra positions to drop


class MaxPoolSaved(NamedTuple):
    """What max-pooling keeps for its backward pass: the input's shape, the window, and where each maximum was."""

    x_shape: tuple
    window: tuple
    stride: tuple
    winners: object  # NumpyOps: a list of (axis, k, s, pass input, argmax) per 1-D pass; CudaOps: argmax


class NumpyOps:
    """The hot operations in NumPy-style code (which CuPy also runs, slice by slice)."""

    pools_in_columns = True  # im2col_pooled and maxpool_blocks: a convolution and its pooling as one op

    def direct_conv_pool(self, dtype, window: tuple) -> bool:
        """Whether this backend computes a convolution-pooling of this dtype and pooling window directly
        (NumbaOps) instead of with columns."""
        return False

    def limit_threads(self, threads: int) -> None:
        """Threads for this backend's own kernels: none here (BLAS has its own limit, see distributed.py)."""
    cupy = None  # ops that can record CUDA graphs hold the CuPy module they launch with (CudaOps)

    def matmul(self, a, b):
        """a @ b for 2-D arrays, into a page-aligned result (see :func:`page_aligned`)."""
        xp = get_array_module(a)
        return xp.matmul(a, b, out=page_aligned(xp, (a.shape[0], b.shape[1]), xp.result_type(a, b)))

    def im2col(self, x, kernel: tuple, stride: tuple, pad: tuple) -> Columns:
        """The columns of a convolution of x (N, C, *S): the shifted slices for stride 1, else plain im2col."""
        if all(s == 1 for s in stride):
            col, extended = im2col_shifted(x, kernel, pad)  # (C, *K, N, E)
            return Columns(col, tuple(extended), tuple(x.shape), kernel, stride, pad, shifted=True)
        col = im2col(x, kernel, stride, pad)  # (C, *K, N, *Q)
        return Columns(col, tuple(col.shape[1 + len(kernel):]), tuple(x.shape), kernel, stride, pad, shifted=False)

    def col2im(self, gcol, columns: Columns):
        """The adjoint of :meth:`im2col`: gcol shaped like ``columns.col`` -> gx (N, C, *S)."""
        if columns.shifted:
            return col2im_shifted(gcol, columns.x_shape, columns.kernel, columns.pad)
        return col2im(gcol, columns.x_shape, columns.kernel, columns.stride, columns.pad)

    def im2col_pooled(self, x, kernel: tuple, pad: tuple, window: tuple):
        """(col (C, *K, *k, E), geometry): the columns of a stride-1 convolution that max-pooling follows."""
        geometry = pool_geometry(tuple(x.shape), kernel, pad, window, memory_order(x))
        return im2col_pooled(x, geometry), geometry

    def col2im_pooled(self, gcol, geometry: PoolGeometry):
        """The adjoint of :meth:`im2col_pooled`: gcol (C, *K, *k, E) -> gx (N, C, *S)."""
        return col2im_pooled(gcol, geometry)

    def maxpool_blocks(self, y, d: int):
        """Max-pooling of a convolution output laid out by window offset: y (O, *k, *E) -> (O, *E).

        The window offsets are axes of their own here, so each 1-D pass of
        :meth:`maxpool` compares whole contiguous blocks. The last window axis
        goes first, which keeps the tie rule of :meth:`maxpool`.
        """
        passes = []
        for axis in reversed(range(1, 1 + d)):
            k = y.shape[axis]
            pooled, argmax = _maxpool_1d(y, axis, k, k)  # axis ``axis`` shrinks from k to 1
            passes.append((axis, k, k, y, argmax))
            y = pooled
        return y.reshape(y.shape[:1] + y.shape[1 + d:]), passes  # (O, 1, ..., 1, *E) -> (O, *E)

    def maxpool_blocks_backward(self, gy, passes: list):
        """Each gradient of gy (O, *E) to its window's winner: -> (O, *k, *E), laid out as the GEMM's output."""
        d = len(passes)
        gy = gy.reshape(gy.shape[:1] + (1,) * d + gy.shape[1:])  # (O, *E) -> (O, 1, ..., 1, *E)
        for axis, k, s, x, argmax in reversed(passes):
            gy = _maxpool_1d_backward(gy, x, argmax, axis, k, s)
        return gy

    def maxpool(self, x, window: tuple, stride: tuple):
        """(y (N, C, *Q), what backward needs): one 1-D pass per spatial axis.

        W first, then H (then T): on a tie this picks the first maximum in row-major order, as
        PyTorch does. (H first would be a little faster but would prefer the first column instead.)
        """
        passes = []  # (axis, kernel, stride, pass input, argmax) per 1-D pass, for backward
        for axis in reversed(range(2, x.ndim)):
            k, s = window[axis - 2], stride[axis - 2]
            y, argmax = _maxpool_1d(x, axis, k, s)
            passes.append((axis, k, s, x, argmax))
            x = y
        return x, MaxPoolSaved(None, window, stride, passes)

    def maxpool_backward(self, gy, saved: MaxPoolSaved):
        """Each output gradient to the input that won its window: the passes undone in reverse order."""
        for axis, k, s, x, argmax in reversed(saved.winners):
            gy = _maxpool_1d_backward(gy, x, argmax, axis, k, s)
        return gy

    def bias_relu(self, x, b):
        """relu(x + b) for x (N, C, *S) and one bias per channel b (C,); keeps x's memory order."""
        shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...): broadcast over batch and positions
        y = x + b.reshape(shape)
        get_array_module(x).maximum(y, 0, out=y)
        return y

    def bias_relu_backward(self, gy, y, bias_needed: bool = True):
        """(gx, gb) for y = relu(x + b): gx = gy where y > 0, else 0; gb its sum over all axes but channels
        (None when the bias needs no gradient)."""
        gx = self.relu_backward(gy, y)
        gb = gx.sum(axis=(0,) + tuple(range(2, gx.ndim))) if bias_needed else None
        return gx, gb

    def relu_backward(self, gy, y):
        """The gradient through a ReLU whose output was y: gy where y > 0, else 0."""
        # multiplying by a boolean mask is several times faster than np.where(y > 0, gy, 0)
        return gy * (y > 0)

    def count_step(self, hyper) -> None:
        """Advance Adam's step count t, kept in ``hyper`` = (lr, beta1, beta2, eps, t)."""
        hyper[HYPER_T] += 1

    def adam_update(self, p, g, m, v, hyper) -> None:
        """One Adam step over arrays of one shape, in place, with ``hyper`` = (lr, beta1, beta2, eps, t).

        Both bias corrections are folded into two numbers: lr * m_hat / (sqrt(v_hat) + eps)
        = step_size * m / (sqrt(v) + eps_scaled), which saves two passes over each array.
        """
        lr, b1, b2, eps, t = hyper.tolist()  # one read, also from a GPU
        bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
        step_size = lr * math.sqrt(bias2) / bias1
        eps_scaled = eps * math.sqrt(bias2)
        xp = get_array_module(g)
        m += (1 - b1) * (g - m)  # same as m = b1*m + (1-b1)*g, in place
        v += (1 - b2) * (g * g - v)
        denom = xp.sqrt(v)
        denom += eps_scaled
        p -= step_size * m / denom
