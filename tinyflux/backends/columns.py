"""The NumPy code that copies a convolution's inputs
into columns, and adds gradients back (im2col, col2im).

A convolution becomes one matrix product once every input value that a kernel
offset sees is copied into a row block of a "column" matrix
(``tinyflux/functional/convolution.py`` derives it). This module holds the
copies and their adjoints, written against ``xp`` so that CuPy, dpnp and
PyTorch's tensors (through ``torch_arrays``) run them too:

- :func:`im2col` / :func:`col2im`: any stride, one strided slice per kernel offset;
- :func:`im2col_shifted` / :func:`col2im_shifted`: stride 1, one contiguous slice per offset;
- :func:`im2col_pooled` / :func:`col2im_pooled`: stride 1 with max-pooling after it, the columns
  ordered by window offset, read from the input's phase planes.

``NumpyOps`` (numpy_ops.py) calls them; ``numba_blocks`` reuses the phase planes.
"""
from __future__ import annotations

import itertools
import math

from .arrays import get_array_module
from .buffers import page_aligned
from .geometry import (PoolGeometry, batch_second, channels_first, flat_start, index_along,
                       output_size, phase_runs, pooled_inside, pooled_offsets, window_slice)


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
    # (N, C, *S) -> (C, N, *S): free view when x is channel-major
    x_cn = x.transpose(channels_first(d))
    if any(pad):
        padded = xp.zeros((c, n) + tuple(sz + 2 * p for sz, p in zip(sizes, pad)), dtype=x.dtype)
        interior = tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))  # each axis, unpadded
        padded[(slice(None), slice(None)) + interior] = x_cn
    else:
        padded = x_cn
    col = xp.empty((c,) + tuple(kernel) + (n,) + tuple(out), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        # (C, N, *Q)
        source = padded[(slice(None), slice(None)) + tuple(map(window_slice, offset, out, stride))]
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
    # (C, N, *S+2p)
    padded = xp.zeros((c, n) + tuple(sz + 2 * p for sz, p in zip(sizes, pad)), dtype=gcol.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        # (C, N, *Q) view
        target = padded[(slice(None), slice(None)) + tuple(map(window_slice, offset, out, stride))]
        target += gcol[(slice(None),) + offset]
    interior = tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))  # each axis, not its padding
    inner = padded[(slice(None), slice(None)) + interior]
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
    # +1: the spare row
    padded = xp.zeros((c, n, padded_sizes[0] + 1, *padded_sizes[1:]), dtype=x.dtype)
    padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))] = \
        x.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S), copied into the zero frame
    flat = padded.reshape(c, n, -1)  # (C, N, S1+1, *S') -> (C, N, F): one row per image
    extended = (n, padded_sizes[0] - kernel[0] + 1, *padded_sizes[1:])
    length = math.prod(extended[1:])  # E
    col = xp.empty((c,) + tuple(kernel) + (n, length), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = flat_start(offset, padded_sizes)
        # (C, N, E), contiguous runs
        col[(slice(None),) + offset] = flat[:, :, start:start + length]
    return col, extended


def col2im_shifted(gcol, x_shape: tuple, kernel: tuple, pad: tuple):
    """Adjoint of :func:`im2col_shifted`: gcol (C,
    *K, N, E) -> gx (N, C, *S), a channel-major view."""
    xp = get_array_module(gcol)
    d = len(kernel)
    n, c, *sizes = x_shape
    padded_sizes = [sz + 2 * p for sz, p in zip(sizes, pad)]
    length = gcol.shape[-1]
    # (C, N, F)
    flat = xp.zeros((c, n, (padded_sizes[0] + 1) * math.prod(padded_sizes[1:])), dtype=gcol.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = flat_start(offset, padded_sizes)
        flat[:, :, start:start + length] += gcol[(slice(None),) + offset]
    # (C, N, F) -> (C, N, S1+1, *S')
    padded = flat.reshape(c, n, padded_sizes[0] + 1, *padded_sizes[1:])
    interior = tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))  # each axis, not its padding
    inner = padded[(slice(None), slice(None)) + interior]
    return inner.transpose(channels_first(d))  # (C, N, *S) -> (N, C, *S) view


def phase_planes(x, geometry: PoolGeometry):
    """The padded input x (N, C, *S) split into its k**d phase planes (see :func:`im2col_pooled`),
    each flattened: (C, *k, F) with F = prod(geometry.plane)."""
    xp = get_array_module(x)
    c = geometry.x_shape[1]
    # (C, *k, L1+1, N, L2, ..)
    planes = page_aligned(xp, (c,) + geometry.window + geometry.plane, x.dtype, zeros=True)
    copy_into_planes(x, geometry, planes)
    # (C, *k, L1 + 1, N, L2, ...) -> (C, *k, F)
    return planes.reshape((c,) + geometry.window + (-1,))


def copy_into_planes(x, geometry: PoolGeometry, planes, channels=slice(None)) -> None:
    """Copy the input x (N, C, *S) into the zero-filled phase planes (C, *k, L1+1, N, L2, ...): the
    ``channels`` given (all by default; a thread can fill its share)."""
    d = len(geometry.kernel)
    x_cn = x.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S)
    for plane_part, source in phase_runs(geometry):
        # (C, N, S1', ...) -> (C, S1', N, ...)
        copied = x_cn[(channels,) + source[1:]].transpose(batch_second(d + 2))
        planes[(channels,) + plane_part[1:]] = copied


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
        run = (slice(start, start + length),)
        col[(slice(None),) + kk + r] = flat[(slice(None),) + phase + run]  # (C, E)
    return col


def col2im_pooled(gcol, geometry: PoolGeometry):
    """Adjoint of :func:`im2col_pooled`: gcol (C, *K, *k,
    E) -> gx (N, C, *S), laid out in memory as the input."""
    xp = get_array_module(gcol)
    c = geometry.x_shape[1]
    length = gcol.shape[-1]
    # (C, *k, F)
    flat = page_aligned(xp, (c,) + geometry.window + (math.prod(geometry.plane),), gcol.dtype,
                        zeros=True)
    for kk, r, phase, start in pooled_offsets(geometry):
        flat[(slice(None),) + phase + (slice(start,
                                             start + length),)] += gcol[(slice(None),) + kk + r]
    return gradient_from_planes(flat, geometry)


def gradient_from_planes(flat, geometry: PoolGeometry):
    """Adjoint of :func:`phase_planes`: the gradient of the phase planes, flat (C, *k, F), back to
    gx (N, C, *S), laid out in memory as the input was."""
    gx = input_gradient(geometry, flat.dtype, get_array_module(flat))
    copy_from_planes(flat, geometry, gx)
    return gx


def input_gradient(geometry: PoolGeometry, dtype, xp):
    """Zeros of the input's shape (N, C, *S) and memory order: inputs that no window reads keep 0.

    The input's memory order because the ReLU before this layer multiplies this
    gradient element by element with its own output, which has that order, and NumPy
    runs such a product many times faster when the two arrays are laid out alike."""
    order = geometry.x_order
    # x's axes in memory order
    gx = xp.zeros(tuple(geometry.x_shape[axis] for axis in order), dtype=dtype)
    # -> (N, C, *S) view
    return gx.transpose(tuple(order.index(axis) for axis in range(len(order))))


def copy_from_planes(flat, geometry: PoolGeometry, gx, channels=slice(None)) -> None:
    """Adjoint of :func:`copy_into_planes`: the plane gradient flat
    (C, *k, F) into gx (N, C, *S), for the ``channels`` given."""
    d = len(geometry.kernel)
    # -> (C, *k, L1+1, N, L2, ..)
    planes = flat.reshape((geometry.x_shape[1],) + geometry.window + geometry.plane)
    gx_cn = gx.transpose(channels_first(d))  # (N, C, *S) -> (C, N, *S) view
    for plane_part, source in phase_runs(geometry):
        # (C, S1', N, ...) -> (C, N, S1', ...)
        copied = planes[(channels,) + plane_part[1:]].transpose(batch_second(d + 2))
        gx_cn[(channels,) + source[1:]] = copied


def extended_gradient(gy, geometry: PoolGeometry):
    """The pooled gradient gy (N, O, U1, U2, ...) as (O, U1, N, L2, ...), the layout of the pooled
    outputs computed, with 0 at the extra positions (no window's output)."""
    xp = get_array_module(gy)
    d = len(geometry.kernel)
    gy_ext = xp.empty((gy.shape[1],) + geometry.extended, dtype=gy.dtype)  # (O, U1, N, L2, ...)
    # (N, O, U1, ..) -> (O, U1, N, ..)
    gy_ext[pooled_inside(geometry)] = gy.transpose((1, 2, 0) + tuple(range(3, d + 2)))
    for axis in range(3, gy_ext.ndim):  # zero only the extra positions past U2, ...
        gy_ext[index_along(axis, slice(geometry.pooled[axis - 2], None), gy_ext.ndim)] = 0
    return gy_ext
