"""The index arithmetic of convolution and pooling:
output sizes, axis orders, and where each copy reads.

No arrays are touched here; ``numpy_ops.py`` does the copies these sizes and
offsets describe (its docstrings explain the layouts: ``im2col_pooled`` for the
phase planes and the pooled geometry).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Number of kernel positions along one axis: floor((size + 2*pad - kernel) / stride) + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def window_slice(offset: int, out: int, stride: int) -> slice:
    """The slice of input positions that kernel offset ``offset`` reads for all ``out`` outputs."""
    return slice(offset, offset + stride * (out - 1) + 1, stride)


def channels_first(ndim_spatial: int) -> tuple:
    """Axes that swap N and C: (N, C, *S) <-> (C, N, *S); the permutation is its own inverse."""
    return (1, 0) + tuple(range(2, 2 + ndim_spatial))


def flat_start(offset: tuple, padded_sizes: list) -> int:
    """Where kernel offset (k1, k2, ...) starts in a
    flattened padded image: k1*S2*S3 + k2*S3 + k3."""
    start, step = 0, 1
    for k, size in zip(reversed(offset), reversed(padded_sizes)):
        start += k * step
        step *= size
    return start


class PoolGeometry(NamedTuple):
    """Sizes for a stride-1 convolution whose output
    goes straight into max-pooling (see im2col_pooled)."""

    x_shape: tuple  # (N, C, *S) of the input
    kernel: tuple  # K
    pad: tuple
    window: tuple  # k, the pooling window, also its stride
    # U = floor(Q / k) pooled outputs per axis, Q = S + 2p - K + 1 the convolution's outputs
    pooled: tuple
    # (L1 + 1, N, L2, ...): one phase plane, the whole batch side by side along the second axis
    plane: tuple
    extended: tuple  # (U1, N, L2, ...): the positions computed for each window offset
    # the input's axes from the outermost in memory to the innermost; its gradient gets the same
    x_order: tuple


def lifted_to_3d(sizes: tuple, fill: int) -> tuple:
    """Sizes of 1, 2 or 3 spatial axes as 3: leading axes of ``fill`` (1 for sizes and
    windows, 0 for padding), so that one 3-D kernel serves 1-D, 2-D and 3-D."""
    return (fill,) * (3 - len(sizes)) + tuple(sizes)


def memory_order(x) -> tuple:
    """The axes of x from the largest stride to the
    smallest: (0, 1, 2, 3) for a C-contiguous array."""
    return tuple(sorted(range(x.ndim), key=lambda axis: -abs(x.strides[axis])))


def pool_geometry(x_shape: tuple, kernel: tuple, pad: tuple, window: tuple,
                  x_order: tuple = None) -> PoolGeometry:
    """The plane and output sizes of :func:`im2col_pooled` for an input of shape ``x_shape``."""
    n = x_shape[0]
    pooled = tuple(output_size(sz, kn, 1, p) // k
                   for sz, kn, p, k in zip(x_shape[2:], kernel, pad, window))
    # a plane must reach index u + j for every pooled output u and every shift j = (r + kk) // k
    lengths = [u + (k - 1 + kn - 1) // k for u, kn, k in zip(pooled, kernel, window)]
    # +1: the spare row that keeps the last flat slice inside the buffer, as in im2col_shifted
    plane = (lengths[0] + 1, n, *lengths[1:])
    return PoolGeometry(tuple(x_shape), tuple(kernel), tuple(pad), tuple(window), pooled, plane,
                        (pooled[0], n, *lengths[1:]), x_order or tuple(range(len(x_shape))))


def _phase_run(phase: int, k: int, pad: int, size: int, length: int):
    """Where the input values of one phase plane are:
    (plane slice, input slice), or None if it holds none.

    Plane ``phase`` holds padded positions phase, phase + k, phase + 2k, ...; padded
    position t is input position t - pad, which exists for 0 <= t - pad < size.
    """
    # the first plane index past the padding: ceil((pad - phase) / k)
    first = max(0, -(-(pad - phase) // k))
    start = phase + k * first - pad  # the input position it holds
    count = min(length - first, -(-(size - start) // k))
    if count <= 0:
        return None
    return slice(first, first + count), slice(start, start + k * (count - 1) + 1, k)


def phase_runs(geometry: PoolGeometry):
    """For each phase (one offset per axis, 0 <= a < k)
    that holds input: its plane index and input index.

    The plane index applies to the planes array (C, *k, L1 + 1, N, L2, ...), the input
    index to the channel-major input (C, N, *S); the input part it selects, transposed
    by :func:`batch_second`, has the shape of the plane part.
    """
    sizes = geometry.x_shape[2:]
    lengths = (geometry.plane[0] - 1,) + geometry.plane[2:]  # the spare row never holds input
    everything = slice(None)
    for phase in itertools.product(*(range(k) for k in geometry.window)):
        runs = [_phase_run(a, k, p, sz, n)
                for a, k, p, sz, n in zip(phase, geometry.window, geometry.pad, sizes, lengths)]
        if all(runs):
            plane_part = ((everything,) + phase + (runs[0][0], everything)
                          + tuple(plane for plane, _ in runs[1:]))
            yield plane_part, (everything, everything) + tuple(source for _, source in runs)


def batch_second(ndim: int) -> tuple:
    """Axes that swap N and the first spatial axis: (C,
    N, S1, ...) <-> (C, S1, N, ...); its own inverse."""
    return (0, 2, 1) + tuple(range(3, ndim))


def pooled_offsets(geometry: PoolGeometry):
    """Each (kernel offset kk, window offset r) with
    the phase plane and the flat start that it reads.

    Output position q = k*u + r reads padded position q + kk = k*(u + j) + phase with
    phase = (r + kk) % k and j = (r + kk) // k: the plane of that phase, shifted by j.
    """
    for kk in itertools.product(*(range(n) for n in geometry.kernel)):
        for r in itertools.product(*(range(k) for k in geometry.window)):
            phase = tuple((a + b) % k for a, b, k in zip(r, kk, geometry.window))
            shift = tuple((a + b) // k for a, b, k in zip(r, kk, geometry.window))
            # no shift along N
            yield kk, r, phase, flat_start(shift[:1] + (0,) + shift[1:], geometry.plane)


def pooled_to_batch_first(d: int) -> tuple:
    """Axes from (O, U1, N, U2, ...) to (N, O, U1, U2, ...); (1, 2, 0, 3, ...) goes back."""
    return (2, 0, 1) + tuple(range(3, d + 2))


def pooled_inside(geometry: PoolGeometry) -> tuple:
    """Index of the pooled outputs in (O, U1, N, L2,
    ...): the extra positions past U2, ... left out."""
    return (slice(None), slice(None), slice(None)) + tuple(slice(0, u) for u in geometry.pooled[1:])


def index_along(axis: int, index, ndim: int) -> tuple:
    """An indexing tuple that applies ``index`` to one axis and takes everything on the others."""
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - axis - 1)
