"""A plain stride-1 convolution with columns, one cache-sized block of positions at a time (Numba).

It is ``numba_blocks``' convolution-pooling with windows of one position
(its columns, GEMMs, lanes and groups; see there), except where each block's
y = W @ columns goes: straight to its place in a compact (O, Q1, N, Q2, ...)
array, the bias added on the way (``_store``). The GEMM computes every
position of the extended layout (U1, N, L2, ...), whose rows run past the
output (the columns are read from padded planes with the batch side by side);
those positions are left out when storing, and read back as zeros in the
backward pass (``_load``). So neither a full-size array in the extended
layout nor a pass of its own for the bias is ever written:

    forward:   y_b = W @ col_b                  (O, B)    B positions e0..e1 of the extended layout
               y[:, inside positions of e0..e1] = y_b + bias
    backward:  gy_b = gy at e0..e1, 0 at the positions past the rows
               gw += col_b @ gy_b^T,  gplanes += the columns of W^T @ gy_b   (as numba_blocks)
               gb = the sum of gy over all but the channel axis
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .buffers import page_aligned
from .geometry import PoolGeometry, pooled_to_batch_first
from .numba_blocks import backward_blocks, forward_blocks, planes_and_table


@numba.njit(nogil=True, cache=True)
def _store(y, e0, out, bias, with_bias, tail_extended, tail_inside):
    """out (O, M) compact: the outputs y (O, B) of extended positions e0..e0+B
    that lie inside, plus bias[o] where ``with_bias`` (see :func:`conv_blocks`).

    An extended position is (outer, a, b) in (U1*N, La, Lb) = ``tail_extended``; it is
    inside when a < ``tail_inside[0]`` and b < ``tail_inside[1]``, and lands at
    (outer, a, b) of (U1*N, Ua, Ub). The block is walked one row of Lb at a time, the
    row's place counted on from the first (a division per position would cost more
    than the copy)."""
    rows_extended, row_extended = tail_extended
    rows_inside, row_inside = tail_inside
    length = y.shape[1]
    for o in range(y.shape[0]):
        source, target, b = y[o], out[o], bias[o]
        row, column, first = e0 // row_extended, e0 % row_extended, 0
        outer, a = row // rows_extended, row % rows_extended
        while first < length:
            run = min(row_extended - column, length - first)  # to the row's end or the block's
            if a < rows_inside and column < row_inside:
                start = (outer * rows_inside + a) * row_inside + column
                count = min(run, row_inside - column)
                part, place = source[first:first + count], target[start:start + count]
                # two loops over two slices, which Numba makes SIMD code of; without a
                # bias the values are copied as they are (y + 0 would turn -0.0 into 0.0)
                if with_bias:
                    for i in range(count):
                        place[i] = part[i] + b
                else:
                    for i in range(count):
                        place[i] = part[i]
            first, column, a = first + run, 0, a + 1
            if a == rows_extended:
                outer, a = outer + 1, 0


@numba.njit(nogil=True, cache=True)
def _load(gy, e0, gy_block, tail_extended, tail_inside):
    """gy_block (O, B): the gradient at extended positions e0..e0+B, read
    from the compact gy (O, M), 0 where a position is not inside; the
    adjoint of :func:`_store` (the bias adds nothing to the gradient)."""
    rows_extended, row_extended = tail_extended
    rows_inside, row_inside = tail_inside
    length = gy_block.shape[1]
    zero = gy_block.dtype.type(0)
    for o in range(gy_block.shape[0]):
        source, target = gy[o], gy_block[o]
        row, column, first = e0 // row_extended, e0 % row_extended, 0
        outer, a = row // rows_extended, row % rows_extended
        while first < length:
            run = min(row_extended - column, length - first)
            count = 0
            if a < rows_inside and column < row_inside:
                start = (outer * rows_inside + a) * row_inside + column
                count = min(run, row_inside - column)
                part, place = source[start:start + count], target[first:first + count]
                for i in range(count):
                    place[i] = part[i]
            rest = target[first + count:first + run]
            for i in range(run - count):
                rest[i] = zero
            first, column, a = first + run, 0, a + 1
            if a == rows_extended:
                outer, a = outer + 1, 0


class ConvBlockSaved(NamedTuple):
    """What :func:`conv_blocks` keeps for its backward pass."""

    flat: np.ndarray  # (C, 1, F): the padded input as one phase plane
    # (pairs, 4): (kk, 0, 0, start) per kernel offset, see numba_blocks._columns
    table: np.ndarray
    geometry: PoolGeometry
    with_bias: bool


def _tails(geometry: PoolGeometry) -> tuple:
    """((La, Lb), (Ua, Ub)): the extended and the inside sizes of the axes
    after (U1, N), as two axes (1 where a 1-D or 2-D input has fewer)."""
    extended = ((1, 1) + geometry.extended[2:])[-2:]
    inside = ((1, 1) + geometry.pooled[1:])[-2:]
    return extended, inside


def conv_blocks(x, w, bias, pad: tuple, lanes: int):
    """(y (N, O, *Q), saved): a stride-1 convolution x * w, plus the ``bias`` (O,) where one is
    given, on ``lanes`` threads (see the module's docstring). The caller runs it with BLAS on one
    thread."""
    o, d = w.shape[0], w.ndim - 2
    window = (1,) * d
    flat, table, geometry = planes_and_table(x, w, pad, window, lanes)
    tail_extended, tail_inside = _tails(geometry)
    # (O, Q1, N, Q2, ...): the layout the pooled outputs have, without the extra positions
    y = page_aligned(np, (o,) + geometry.pooled[:1] + (x.shape[0],) + geometry.pooled[1:],
                     x.dtype)
    y_rows = y.reshape(o, -1)  # (O, Q1, N, Q2, ...) -> (O, M)
    with_bias = bias is not None
    # the kernel takes an array either way; without a bias it is not read
    bias = np.ascontiguousarray(bias, dtype=x.dtype) if with_bias else np.zeros(o, x.dtype)
    forward_blocks(flat, table, geometry, w, lanes,
                   lambda block, e0, won: _store(block.reshape(o, -1), e0, y_rows, bias,
                                                 with_bias, tail_extended, tail_inside))
    # (O, Q1, N, Q2, ...) -> (N, O, Q1, Q2, ...)
    return y.transpose(pooled_to_batch_first(d)), ConvBlockSaved(flat, table, geometry, with_bias)


def conv_blocks_backward(gy, w, saved: ConvBlockSaved, needs: tuple, lanes: int):
    """(gx (N, C, *S) or None, gw (O, C, *K) or None, gb (O,) or None) from the gradient gy
    (N, O, *Q) of :func:`conv_blocks`' output; gb only where it added a bias."""
    d = w.ndim - 2
    o = w.shape[0]
    tail_extended, tail_inside = _tails(saved.geometry)
    # (N, O, Q1, Q2, ...) -> (O, Q1, N, Q2, ...) -> (O, M); no copy when gy has y's layout
    gy_rows = np.ascontiguousarray(gy.transpose((1, 2, 0) + tuple(range(3, d + 2))))
    gy_rows = gy_rows.reshape(o, -1)
    gx, gw = backward_blocks(
        lambda block, e0: _load(gy_rows, e0, block.reshape(o, -1), tail_extended, tail_inside),
        gy.dtype, w, saved.flat, saved.table, saved.geometry, needs, lanes)
    with_bias = saved.with_bias and len(needs) > 2 and needs[2]
    # (N, O, *Q) -> (O,)
    gb = gy.sum(axis=(0,) + tuple(range(2, gy.ndim))) if with_bias else None
    return gx, gw, gb
