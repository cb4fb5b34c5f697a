"""A convolution and its max-pooling with columns,
one cache-sized block of positions at a time (Numba).

This is ``NumpyOps.conv_pool``'s columns path (``columns.im2col_pooled``,
one GEMM, ``maxpool_blocks``) cut along the E positions of the columns. With
W = w.reshape(O, C*prod(K)) and the columns of positions e0..e1 only:

    forward:   col_b = columns(planes, e0..e1)        (C*prod(K), R, B)   R = k**d window offsets
               y_b   = W @ col_b                       (O, R, B)
               pooled[:, e0..e1], winner[:, e0..e1] = max and argmax over R
    backward:  gy_b  = each pooled gradient at its winner's offset, 0 elsewhere       (O, R, B)
               gw   += col_b @ gy_b^T                  (col_b built again from the planes)
               gplanes += the columns of W^T @ gy_b, added back where they were read

Why blocks. The whole-batch columns are tens of MB (MNIST's second layer:
144 rows by 28,672), so they are written to memory, read back by the GEMM,
and read again by the weight gradient; ``gcol`` likewise. A block of B
positions (a few hundred kB of columns) stays in the processor's cache from
its copy to its product to its pooling, and the full-size columns, GEMM
output and ``gcol`` are never written at all. The same cut in NumPy cost more
than it saved: each block is 36 slice copies (3x3 kernel, 2x2 window) and as
many adds, one Python call each. Here each is one compiled loop.

Why threads. The copies and the pooling are one core's work in NumPy, and
only the GEMMs used both. Here the blocks are dealt out to ``lanes`` Python
threads, each running its own blocks' copies, products (on one BLAS thread)
and pooling; Numba's kernels release the GIL (``nogil``), as NumPy's matmul
does. The phase planes are filled before the blocks, and the input gradient
copied out of them after, each lane taking a share of the channels.

Why the same numbers on any number of threads. Floating-point addition is
not associative, so the weight and input gradients, which add up every
block's share, must add them in one order whatever the threads. The blocks
are cut by the shapes alone, and dealt out to a fixed number of ``GROUPS``
(block g to group g mod GROUPS); each group adds its blocks in order into
buffers of its own, whichever lane runs it, and the groups' sums are added
in group order at the end. One thread, two or three then give the same bits,
so a run split over processes, or resumed with another thread count,
repeats the numbers of a single run. The price is GROUPS buffers of the
input gradient instead of one per thread.

With a bias b the op returns relu(pooled + b) (``nn.Chain`` asks for that
after a Conv with ReLU): one pass over the contiguous pooled buffer, where a
BiasReLU op of its own would work on the strided (N, O, U1, U2) view of it.
Backward then starts with the ReLU's gradient and the bias's, gb = the sum
of the masked gradient per channel.

A plain convolution (``numba_conv.conv_blocks``) is the same op with windows of
one position, and uses the drivers here.

The kernels loop over slices element by element instead of assigning whole
slices (``target[:] = source``): Numba made SIMD code of the loops only.
"""
from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

from .buffers import page_aligned
from .geometry import (PoolGeometry, memory_order, pool_geometry, pooled_inside, pooled_offsets,
                       pooled_to_batch_first)
from .columns import copy_from_planes, copy_into_planes, extended_gradient, input_gradient

BLOCK_BYTES = 2**19  # a block's columns and output, about: a share of the 1-2 MB cache of a core
GROUPS = 4  # the backward pass's partial sums; more threads than this wait in the backward pass


@numba.njit(nogil=True, cache=True)
def _columns(flat, table, e0, e1, col):
    """col (C*K, R, e1 - e0): the columns of positions
    e0..e1, read from the flat phase planes (C, R, F).

    ``table`` has one row (kernel offset kk, window offset r, phase,
    start) per pair, all as flat indices: column row c*K + kk at window
    offset r is plane (c, phase) from ``start``, as in im2col_pooled."""
    channels = flat.shape[0]
    kernel = col.shape[0] // channels
    for i in range(table.shape[0]):
        kk, r, phase, start = table[i, 0], table[i, 1], table[i, 2], table[i, 3]
        for c in range(channels):
            source, target = flat[c, phase, start + e0:start + e1], col[c * kernel + kk, r]
            # a loop over two slices: Numba makes SIMD code of it, not of target[:] = ..
            for j in range(e1 - e0):
                target[j] = source[j]


@numba.njit(nogil=True, cache=True)
def _add_columns(gcol, table, e0, e1, gflat):
    """The adjoint of :func:`_columns`: each column of gcol
    (C*K, R, e1 - e0) added back to its plane position."""
    channels = gflat.shape[0]
    kernel = gcol.shape[0] // channels
    for i in range(table.shape[0]):
        kk, r, phase, start = table[i, 0], table[i, 1], table[i, 2], table[i, 3]
        for c in range(channels):
            source, target = gcol[c * kernel + kk, r], gflat[c, phase, start + e0:start + e1]
            for j in range(e1 - e0):
                target[j] += source[j]


@numba.njit(nogil=True, cache=True)
def _pool(y, e0, pooled, winner, won):
    """pooled, winner (O, E) at positions e0..e0+B: the largest of y (O,
    R, B) over its R window offsets, and which one (the first on ties,
    as NumpyOps.maxpool_blocks picks). ``won`` (B,) int32 is scratch.

    Written as selects over whole rows, not as "if larger: store": every store
    happens, so the loop over i becomes SIMD code, and no branch depends on the data
    (random data would mispredict half of them). The winner is counted in int32
    first: with a byte beside the float compare, LLVM did not make SIMD code of it."""
    length = y.shape[2]
    for o in range(y.shape[0]):
        best, first, target = pooled[o, e0:e0 + length], y[o, 0], winner[o, e0:e0 + length]
        for i in range(length):
            best[i] = first[i]
            won[i] = 0
        for r in range(1, y.shape[1]):
            row = y[o, r]
            for i in range(length):
                # strict: a tie keeps the earlier offset; a
                # NaN wins and stays, as np.maximum keeps it
                larger = row[i] > best[i] or row[i] != row[i]
                best[i] = row[i] if larger else best[i]
                won[i] = r if larger else won[i]
        for i in range(length):
            target[i] = won[i]


@numba.njit(nogil=True, cache=True)
def _unpool(gy, winner, e0, gy_block):
    """gy_block (O, R, B): each gradient of gy (O, E) at positions
    e0..e0+B at its winner's window offset, 0 at the others."""
    zero = gy_block.dtype.type(0)
    length = gy_block.shape[2]
    for o in range(gy.shape[0]):
        grads, won = gy[o, e0:e0 + length], winner[o, e0:e0 + length]
        for r in range(gy_block.shape[1]):
            target = gy_block[o, r]
            for i in range(length):
                target[i] = grads[i] if won[i] == r else zero


@numba.njit(nogil=True, cache=True)
def _bias_relu(pooled, bias):
    """pooled (O, E) = relu(pooled + bias[o]), in place."""
    zero = pooled.dtype.type(0)
    for o in range(pooled.shape[0]):
        row, b = pooled[o], bias[o]
        for i in range(row.shape[0]):
            value = row[i] + b
            row[i] = value if value > zero or value != value else zero  # NaN stays NaN, as in NumPy


@numba.njit(nogil=True, cache=True)
def _relu_grad(gy, activated):
    """gy (O, E) *= (activated > 0), in place."""
    zero = gy.dtype.type(0)
    for o in range(gy.shape[0]):
        row, on = gy[o], activated[o]
        for i in range(row.shape[0]):
            row[i] = row[i] if on[i] > zero else zero


class BlockSaved(NamedTuple):
    """What :func:`conv_pool_blocks` keeps for its backward pass."""

    flat: np.ndarray  # (C, R, F): the phase planes of the padded input
    winner: np.ndarray  # (O, E): which window offset won
    # (pairs, 4): (kk, r, phase, start) per kernel and window offset, see _columns
    table: np.ndarray
    geometry: PoolGeometry
    # (O, E): relu(pooled + bias) when the op adds a bias and a ReLU, else None
    activated: object = None


@functools.lru_cache(maxsize=64)
def _table(geometry: PoolGeometry) -> np.ndarray:
    """pooled_offsets as an array, with each tuple offset flattened to
    one index (row-major); kept for the geometries seen last, since
    building it in Python is slow beside the kernels that read it."""
    kernel_index = np.arange(math.prod(geometry.kernel)).reshape(geometry.kernel)
    window_index = np.arange(math.prod(geometry.window)).reshape(geometry.window)
    rows = [(kernel_index[kk], window_index[r], window_index[phase], start)
            for kk, r, phase, start in pooled_offsets(geometry)]
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    table.flags.writeable = False  # shared by every call with this geometry
    return table


def _blocks(length: int, rows: int, itemsize: int) -> list:
    """(e0, e1) blocks of positions: ``rows`` numbers per position, about
    BLOCK_BYTES a block, and at least two blocks per group where the positions
    allow (so that no lane waits long for the last one). They depend on the
    shapes only. The callers count a block's columns and its GEMM output (or
    gradient) together, the block's working set: with one input channel
    (MNIST's first layer) the output's 16 rows outweigh the columns' 9, and
    counting the columns alone would cut blocks over twice too big."""
    size = max(64, BLOCK_BYTES // (rows * itemsize))
    size = min(size, -(-length // (2 * GROUPS)))
    size = max(1, size)
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def _share(count: int, lane: int, lanes: int) -> slice:
    """Lane ``lane``'s share of ``count`` channels, in one run."""
    return slice(count * lane // lanes, count * (lane + 1) // lanes)


class BlockRunner:
    """Runs one function per lane, lane 0 on the calling
    thread and the others on a small thread pool."""

    def __init__(self):
        self.pool = None
        self.workers = 0

    def run(self, work, lanes: int) -> list:
        """[work(0), work(1), ..., work(lanes - 1)], the first on this thread."""
        if lanes > 1 and self.workers < lanes - 1:
            self.pool = ThreadPoolExecutor(lanes - 1, thread_name_prefix="tinyflux-block")
            self.workers = lanes - 1
        futures = [self.pool.submit(work, lane) for lane in range(1, lanes)]
        first = work(0)
        return [first] + [future.result() for future in futures]


RUNNER = BlockRunner()


def run_jobs(kernel, jobs: int, lanes: int, *args) -> None:
    """kernel(*args, start, stop) for jobs 0..jobs-1, a run of them per lane.

    Every Numba kernel of tinyflux runs on these lanes, none on Numba's own
    threads (``prange``): those come from OpenMP, whose idle threads spin for a
    while after each parallel loop, waiting for the next, and took the cores
    of the lanes running the blocks right after."""
    lanes = max(1, min(lanes, jobs))

    def work(lane):
        share = _share(jobs, lane, lanes)
        kernel(*args, share.start, share.stop)

    RUNNER.run(work, lanes)


def planes_and_table(x, w, pad: tuple, window: tuple, lanes: int):
    """The phase planes of x as (C, R, F), the columns' table, and the geometry."""
    geometry = pool_geometry(tuple(x.shape), tuple(w.shape[2:]), pad, window, memory_order(x))
    c = x.shape[1]
    # (C, *k, L1+1, N, ..)
    planes = page_aligned(np, (c,) + geometry.window + geometry.plane, x.dtype, zeros=True)
    copy_lanes = min(lanes, c)  # the copies into the planes, a share of the channels per lane
    RUNNER.run(lambda lane: copy_into_planes(x, geometry, planes, _share(c, lane, copy_lanes)),
               copy_lanes)
    flat = planes.reshape(c, math.prod(window), -1)  # (C, *k, L1+1, N, L2, ...) -> (C, R, F)
    return flat, _table(geometry), geometry


def forward_blocks(flat, table, geometry, w, lanes: int, finish):
    """y = W @ columns for each block of positions e0..e1, on ``lanes`` threads;
    ``finish(y (O, R, B), e0, won)`` takes each block's y where it goes
    (``won``: (B,) int32 scratch of the lane running it)."""
    o, (c, windows) = w.shape[0], flat.shape[:2]
    length = math.prod(geometry.extended)
    rows = c * math.prod(geometry.kernel)
    w_rows = np.ascontiguousarray(w.reshape(o, rows))  # (O, C, *K) -> (O, C*prod(K))
    blocks = _blocks(length, (rows + o) * windows, flat.itemsize)  # columns and y
    lanes = min(lanes, len(blocks))  # each position is written once: any lane may take any block

    def work(lane):
        size = max(e1 - e0 for e0, e1 in blocks)
        col_buffer = np.empty(rows * windows * size, flat.dtype)
        y_buffer = np.empty(o * windows * size, flat.dtype)
        won = np.empty(size, dtype=np.int32)
        for e0, e1 in blocks[lane::lanes]:
            col = col_buffer[:rows * windows * (e1 - e0)].reshape(rows, windows, e1 - e0)
            _columns(flat, table, e0, e1, col)
            y = y_buffer[:o * windows * (e1 - e0)].reshape(o, windows * (e1 - e0))
            # (O, C*prod(K)) @ (C*prod(K), R*B) -> (O, R*B)
            np.matmul(w_rows, col.reshape(rows, -1), out=y)
            finish(y.reshape(o, windows, e1 - e0), e0, won)

    RUNNER.run(work, lanes)


def conv_pool_blocks(x, w, pad: tuple, window: tuple, lanes: int, bias=None):
    """(pooled (N, O, *U) view, saved): maxpool(conv(x, w)), stride 1,
    no bias, block by block on ``lanes`` threads; with a ``bias`` (O,),
    relu(that + bias). The caller runs it with BLAS on one thread."""
    o, d = w.shape[0], w.ndim - 2
    flat, table, geometry = planes_and_table(x, w, pad, window, lanes)
    length = math.prod(geometry.extended)
    pooled = page_aligned(np, (o, length), x.dtype)  # (O, E)
    # which window offset won: a byte holds up to 256 of them
    winner = np.empty((o, length), dtype=np.uint8 if math.prod(window) <= 256 else np.int32)
    forward_blocks(flat, table, geometry, w, lanes,
                   lambda y, e0, won: _pool(y, e0, pooled, winner, won))
    if bias is not None:
        _bias_relu(pooled, bias)
    saved = BlockSaved(flat, winner, table, geometry, pooled if bias is not None else None)
    pooled = pooled.reshape((o,) + geometry.extended)  # (O, E) -> (O, U1, N, L2, ...)
    inside = pooled[pooled_inside(geometry)]  # (O, U1, N, U2, ...)
    return inside.transpose(pooled_to_batch_first(d)), saved


def conv_pool_blocks_backward(gy, w, saved: BlockSaved, needs: tuple, lanes: int):
    """(gx (N, C, *S) or None, gw (O, C, *K) or None), and gb (O,) or None where the op added a
    bias, from the gradient gy (N, O, *U) of its output."""
    flat, winner, table, geometry, activated = saved
    o = w.shape[0]
    gy_ext = extended_gradient(gy, geometry).reshape(o, -1)  # (O, U1, N, L2, ...) -> (O, E)
    gb = None
    if activated is not None:  # the ReLU's gradient first; the extra positions hold 0 in gy_ext
        _relu_grad(gy_ext, activated)
        gb = gy_ext.sum(axis=1) if needs[2] else None
    gx, gw = backward_blocks(lambda block, e0: _unpool(gy_ext, winner, e0, block),
                             gy.dtype, w, flat, table, geometry, needs, lanes)
    return (gx, gw) if activated is None else (gx, gw, gb)


def backward_blocks(load, dtype, w, flat, table, geometry, needs: tuple, lanes: int):
    """(gx or None, gw or None) of the block convolution, where ``load(gy_block (O, R, B), e0)``
    writes each block's gradient of y = W @ columns."""
    o = w.shape[0]
    c, windows = flat.shape[:2]
    rows = c * math.prod(geometry.kernel)
    w_rows = np.ascontiguousarray(w.reshape(o, rows))  # (O, C, *K) -> (O, C*prod(K))
    # columns and the gradient of y
    blocks = _blocks(math.prod(geometry.extended), (rows + o) * windows, flat.itemsize)
    groups = min(GROUPS, len(blocks))
    lanes = min(lanes, groups)

    def work(lane):
        """The sums of the groups lane, lane + lanes, ...: [(group, gw_rows, gflat), ...]."""
        size = max(e1 - e0 for e0, e1 in blocks)
        col_buffer = np.empty(rows * windows * size, dtype)
        gy_buffer = np.empty(o * windows * size, dtype)
        done = []
        for group in range(lane, groups, lanes):
            # this group's sum, (C*prod(K), O)
            gw_rows = np.zeros((rows, o), dtype=dtype) if needs[1] else None
            gflat = np.zeros_like(flat) if needs[0] else None  # (C, R, F)
            for e0, e1 in blocks[group::groups]:
                gy_rows = gy_buffer[:o * windows * (e1 - e0)].reshape(o, windows * (e1 - e0))
                load(gy_rows.reshape(o, windows, e1 - e0), e0)
                col = col_buffer[:rows * windows * (e1 - e0)].reshape(rows, windows * (e1 - e0))
                if needs[1]:
                    _columns(flat, table, e0, e1, col.reshape(rows, windows, e1 - e0))
                    gw_rows += col @ gy_rows.T  # (C*prod(K), R*B) @ (R*B, O)
                if needs[0]:
                    # gcol: (C*prod(K), O) @ (O, R*B), into the columns
                    np.matmul(w_rows.T, gy_rows, out=col)
                    _add_columns(col.reshape(rows, windows, e1 - e0), table, e0, e1, gflat)
            done.append((group, gw_rows, gflat))
        return done

    by_group = sorted((part for lane_parts in RUNNER.run(work, lanes) for part in lane_parts),
                      key=lambda p: p[0])
    # in group order, whatever lane ran each
    sums = [(gw_rows, gflat) for _, gw_rows, gflat in by_group]
    gx = gw = None
    if needs[0]:
        gx = input_gradient(geometry, dtype, np)  # (N, C, *S), zeros

        # this lane's share of the channels: the groups' sums, then into gx
        def add_groups_and_copy(lane):
            channels = _share(c, lane, copy_lanes)
            total = sums[0][1]
            for _, more in sums[1:]:
                total[channels] += more[channels]
            copy_from_planes(total, geometry, gx, channels)

        copy_lanes = min(lanes, c)
        RUNNER.run(add_groups_and_copy, copy_lanes)
    if needs[1]:
        gw_rows = sums[0][0]
        for more, _ in sums[1:]:
            gw_rows += more
        gw = gw_rows.T.reshape(w.shape)  # (C*prod(K), O) -> (O, C*prod(K)) -> (O, C, *K)
    return gx, gw
