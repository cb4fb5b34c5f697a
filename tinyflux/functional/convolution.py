"""N-dimensional convolution and max-pooling (1-D sequences, 2-D images, 3-D videos).

Notation: N batch, C input channels, O output channels, S spatial sizes
(W for 1-D, (H, W) for 2-D, (T, H, W) for 3-D), K kernel sizes, Q output
sizes, s stride, p padding, P = prod(Q) output positions per image.

Convolution (cross-correlation, as in PyTorch):

    y[n, o, q] = b[o] + sum_{c, k} w[o, c, k] * x_padded[n, c, q*s + k]

im2col turns this into one matrix product. For each kernel offset k we copy
the input values that offset sees at every output position into one row
block of a "column" matrix of shape (C*prod(K), N*P); then

    y = w.reshape(O, C*prod(K)) @ col        # (O, N*P): one GEMM does all the work

Backward is two more products, gw = gy @ col.T and gcol = w.T @ gy, and
"col2im", which adds each row block of gcol back to where it was copied
from: a loop over the prod(K) kernel offsets with ``+=`` on strided slices
(one slice per offset never overlaps itself, so no ``np.add.at`` is needed).

Memory layout: the GEMM produces channel-major (O, N, *Q) data. We return it
as a transposed *view* of shape (N, O, *Q), so the API stays NCHW like
PyTorch while the memory stays (C, N, H, W). The next layer's im2col reads
that view as (C, N, H, W) with no transpose at all, and element-wise ops
(ReLU, pooling) keep the memory order of their input. Only ``flatten``
before a dense layer pays for one real transpose.

For stride 1, :func:`im2col_shifted` builds the same columns faster from
one contiguous slice per kernel offset (see its docstring); :class:`Conv`
uses it and keeps the plain :func:`im2col` for larger strides.

Max-pooling keeps, for every window, the largest value and which of the
window's offsets it came from (the first one, on ties); backward sends each
output gradient to exactly that one input. It runs one spatial axis at a
time (a window's maximum is the maximum of its rows' maxima).
"""
from __future__ import annotations

import itertools
import math

from .. import backend
from ..checks import as_tuple
from ..tensor import Function, Tensor


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Number of kernel positions along one axis: floor((size + 2*pad - kernel) / stride) + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def _window(offset: int, out: int, stride: int) -> slice:
    """The slice of input positions that kernel offset ``offset`` reads for all ``out`` outputs."""
    return slice(offset, offset + stride * (out - 1) + 1, stride)


def _channels_first(ndim_spatial: int) -> tuple:
    """Axes that swap N and C: (N, C, *S) <-> (C, N, *S); the permutation is its own inverse."""
    return (1, 0) + tuple(range(2, 2 + ndim_spatial))


def im2col(x, kernel: tuple, stride: tuple, pad: tuple):
    """Copy the input patches seen by each kernel offset into a column array.

    Args:
        x: (N, C, *S) array.
    Returns:
        col: (C, *K, N, *Q) array; reshaped to (C*prod(K), N*P) it is the GEMM operand.
    """
    xp = backend.get_array_module(x)
    d = len(kernel)
    n, c, *sizes = x.shape
    out = [output_size(sz, k, st, p) for sz, k, st, p in zip(sizes, kernel, stride, pad)]
    x_cn = x.transpose(_channels_first(d))  # (N, C, *S) -> (C, N, *S): free view when x is channel-major
    if any(pad):
        padded = xp.zeros((c, n) + tuple(sz + 2 * p for sz, p in zip(sizes, pad)), dtype=x.dtype)
        padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))] = x_cn
    else:
        padded = x_cn
    col = xp.empty((c,) + tuple(kernel) + (n,) + tuple(out), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        source = padded[(slice(None), slice(None)) + tuple(map(_window, offset, out, stride))]  # (C, N, *Q)
        col[(slice(None),) + offset] = source
    return col


def col2im(gcol, x_shape: tuple, kernel: tuple, stride: tuple, pad: tuple):
    """Adjoint of :func:`im2col`: add each offset's block of ``gcol`` back onto the input.

    Args:
        gcol: (C, *K, N, *Q) array.
    Returns:
        gx: (N, C, *S), a channel-major view like the conv output.
    """
    xp = backend.get_array_module(gcol)
    d = len(kernel)
    n, c, *sizes = x_shape
    out = gcol.shape[2 + d:]
    padded = xp.zeros((c, n) + tuple(sz + 2 * p for sz, p in zip(sizes, pad)), dtype=gcol.dtype)  # (C, N, *S+2p)
    for offset in itertools.product(*(range(k) for k in kernel)):
        target = padded[(slice(None), slice(None)) + tuple(map(_window, offset, out, stride))]  # (C, N, *Q) view
        target += gcol[(slice(None),) + offset]
    inner = padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))]
    return inner.transpose(_channels_first(d))  # (C, N, *S) -> (N, C, *S) view


def im2col_shifted(x, kernel: tuple, pad: tuple):
    """im2col for stride 1, where each kernel offset's columns are one contiguous slice.

    Pad the input, flatten each image to one row, and compute outputs for every
    position of the padded grid after the first axis (for 2-D: OH rows of Wp
    columns instead of OW). Then kernel offset (i, j) reads the flat slice that
    starts at i*Wp + j: a long contiguous copy instead of OH*N short strided
    rows, several times faster. The price is Wp - OW extra output columns per
    row (7% more GEMM work for 28x28 images, 29% for 7x7), which
    :class:`Conv` cuts away. One spare zero row keeps the last slice inside
    the image.

    Args:
        x: (N, C, *S).
    Returns:
        col: (C, *K, N, E) with E = Q1 * prod(padded S[1:]) extended output positions per image;
        extended: the (N, Q1, *padded S[1:]) shape of those positions.
    """
    xp = backend.get_array_module(x)
    d = len(kernel)
    n, c, *sizes = x.shape
    padded_sizes = [sz + 2 * p for sz, p in zip(sizes, pad)]
    padded = xp.zeros((c, n, padded_sizes[0] + 1, *padded_sizes[1:]), dtype=x.dtype)  # +1: the spare row
    padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))] = \
        x.transpose(_channels_first(d))  # (N, C, *S) -> (C, N, *S), copied into the zero frame
    flat = padded.reshape(c, n, -1)  # (C, N, S1+1, *S') -> (C, N, F): one row per image
    extended = (n, padded_sizes[0] - kernel[0] + 1, *padded_sizes[1:])
    length = math.prod(extended[1:])  # E
    col = xp.empty((c,) + tuple(kernel) + (n, length), dtype=x.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = _flat_start(offset, padded_sizes)
        col[(slice(None),) + offset] = flat[:, :, start:start + length]  # (C, N, E), contiguous runs
    return col, extended


def col2im_shifted(gcol, x_shape: tuple, kernel: tuple, pad: tuple):
    """Adjoint of :func:`im2col_shifted`: gcol (C, *K, N, E) -> gx (N, C, *S), a channel-major view."""
    xp = backend.get_array_module(gcol)
    d = len(kernel)
    n, c, *sizes = x_shape
    padded_sizes = [sz + 2 * p for sz, p in zip(sizes, pad)]
    length = gcol.shape[-1]
    flat = xp.zeros((c, n, (padded_sizes[0] + 1) * math.prod(padded_sizes[1:])), dtype=gcol.dtype)  # (C, N, F)
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = _flat_start(offset, padded_sizes)
        flat[:, :, start:start + length] += gcol[(slice(None),) + offset]
    padded = flat.reshape(c, n, padded_sizes[0] + 1, *padded_sizes[1:])  # (C, N, F) -> (C, N, S1+1, *S')
    inner = padded[(slice(None), slice(None)) + tuple(slice(p, p + sz) for p, sz in zip(pad, sizes))]
    return inner.transpose(_channels_first(d))  # (C, N, *S) -> (N, C, *S) view


def _flat_start(offset: tuple, padded_sizes: list) -> int:
    """Where kernel offset (k1, k2, ...) starts in a flattened padded image: k1*S2*S3 + k2*S3 + k3."""
    start, step = 0, 1
    for k, size in zip(reversed(offset), reversed(padded_sizes)):
        start += k * step
        step *= size
    return start


class Conv(Function):
    """The convolution as one GEMM over im2col columns (the shifted variant when the stride is 1)."""

    def __init__(self, stride: tuple, pad: tuple):
        self.stride, self.pad = stride, pad
        self.shifted = all(s == 1 for s in stride)

    def forward(self, x, w, b=None):
        xp = backend.get_array_module(x)
        o, c = w.shape[:2]
        kernel = w.shape[2:]
        d = len(kernel)
        self.cuda = backend.cuda_kernels(x)  # tinyflux.cuda on a GPU with kernels switched on, else None
        if self.cuda is not None:  # one launch builds the plain columns, whatever the stride
            self.shifted = False
            self.col = self.cuda.im2col(x, kernel, self.stride, self.pad)  # (C, *K, N, *Q)
            extended = self.col.shape[1 + d:]
        elif self.shifted:
            self.col, extended = im2col_shifted(x, kernel, self.pad)  # (C, *K, N, E)
        else:
            self.col = im2col(x, kernel, self.stride, self.pad)  # (C, *K, N, *Q)
            extended = self.col.shape[1 + d:]  # (N, *Q): every computed position is an output
        self.out = tuple(output_size(sz, k, st, p) for sz, k, st, p in zip(x.shape[2:], kernel, self.stride, self.pad))
        col_mat = self.col.reshape(c * math.prod(kernel), -1)  # -> (C*prod(K), N*E)
        self.w, self.x_shape, self.extended = w, x.shape, tuple(extended)
        y = backend.matmul(w.reshape(o, -1), col_mat)  # (O, C*prod(K)) @ (C*prod(K), N*E) -> (O, N*E)
        if b is not None:
            y += b[:, None]  # (O,) -> (O, 1), broadcast over all positions
        y = y.reshape((o,) + tuple(extended))  # (O, N*E) -> (O, N, *E)
        # drop the extended positions; the copy makes the rows contiguous again, which pooling runs faster on
        y = xp.ascontiguousarray(y[(slice(None), slice(None)) + tuple(slice(0, q) for q in self.out)])
        return y.transpose(_channels_first(d))  # (O, N, *Q) -> (N, O, *Q) view, memory stays channel-major

    def backward(self, gy, needs):
        w = self.w
        o = w.shape[0]
        d = w.ndim - 2
        xp = backend.get_array_module(gy)
        gy_cn = gy.transpose(_channels_first(d))  # (N, O, *Q) -> (O, N, *Q)
        if self.shifted:  # back to the extended positions; the extra ones get gradient 0
            gy_ext = xp.empty((o,) + self.extended, dtype=gy.dtype)  # (O, N, *E)
            gy_ext[(slice(None), slice(None)) + tuple(slice(0, q) for q in self.out)] = gy_cn
            for axis in range(3, gy_ext.ndim):  # zero only the extra positions past Q on the later axes
                gy_ext[_along(axis, slice(self.out[axis - 2], None), gy_ext.ndim)] = 0
            gy_mat = gy_ext.reshape(o, -1)  # (O, N, *E) -> (O, N*E)
        else:
            gy_mat = gy_cn.reshape(o, -1)  # (O, N, *Q) -> (O, N*P), a copy unless gy is channel-major
        col_mat = self.col.reshape(-1, gy_mat.shape[1])  # -> (C*prod(K), N*E)
        gx = gw = gb = None
        if needs[0]:
            gcol = backend.matmul(w.reshape(o, -1).T, gy_mat)  # (C*prod(K), O) @ (O, N*E) -> (C*prod(K), N*E)
            gcol = gcol.reshape(self.col.shape)  # -> (C, *K, N, E) or (C, *K, N, *Q)
            if self.shifted:
                gx = col2im_shifted(gcol, self.x_shape, w.shape[2:], self.pad)
            else:
                adjoint = self.cuda.col2im if self.cuda is not None else col2im
                gx = adjoint(gcol, self.x_shape, w.shape[2:], self.stride, self.pad)
        if needs[1]:
            # (C*prod(K), N*E) @ (N*E, O) -> (C*prod(K), O), transposed to (O, C*prod(K)) -> (O, C, *K).
            # Same numbers as gy_mat @ col_mat.T; OpenBLAS runs this orientation 10-20% faster here.
            gw = backend.matmul(col_mat, gy_mat.T).T.reshape(w.shape)
        if len(needs) > 2 and needs[2]:
            gb = gy_mat.sum(axis=1)  # (O,)
        return gx, gw, gb


def _along(axis: int, index, ndim: int) -> tuple:
    """An indexing tuple that applies ``index`` to one axis and takes everything on the others."""
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - axis - 1)


class MaxPool(Function):
    """Max-pooling, done one spatial axis at a time.

    A window's maximum is the maximum over its rows of each row's maximum, so a
    (KH, KW) pool is a 1-D pool along W followed by a 1-D pool along H. That is
    also faster: along W the K strided views of channel-major memory are long
    regular runs, and the later passes work on data already K times smaller.
    Each pass records, per output, which of its K offsets held the maximum (the
    first one on a tie), so exactly one input of every window gets the gradient.
    """

    def __init__(self, window: tuple, stride: tuple):
        self.window, self.stride = window, stride

    def forward(self, x):
        self.cuda = backend.cuda_kernels(x)
        if self.cuda is not None:  # one launch over whole windows; argmax is the offset in the window
            self.x_shape = x.shape
            y, self.argmax = self.cuda.maxpool(x, self.window, self.stride)
            return y
        self.passes = []  # (axis, kernel, stride, pass input, argmax) per 1-D pass, for backward
        # W first, then H (then T): on a tie this picks the first maximum in row-major order, as
        # PyTorch does. (H first would be about 10% faster but would prefer the first column instead.)
        for axis in reversed(range(2, x.ndim)):
            k, s = self.window[axis - 2], self.stride[axis - 2]
            y, argmax = _maxpool_1d(x, axis, k, s)
            self.passes.append((axis, k, s, x, argmax))
            x = y
        return x

    def backward(self, gy, needs):
        if self.cuda is not None:
            return (self.cuda.maxpool_backward(gy, self.argmax, self.x_shape, self.window, self.stride),)
        for axis, k, s, x, argmax in reversed(self.passes):
            gy = _maxpool_1d_backward(gy, x, argmax, axis, k, s)
        return (gy,)


def _maxpool_1d(x, axis: int, k: int, s: int):
    """Max over windows of k positions every s positions along one axis; also which offset won."""
    xp = backend.get_array_module(x)
    out = output_size(x.shape[axis], k, s, 0)
    views = [x[_along(axis, _window(offset, out, s), x.ndim)] for offset in range(k)]  # k views, each (..., out, ...)
    if k == 1:
        return views[0].copy(order="K"), xp.zeros_like(views[0], dtype=xp.uint8)
    y = xp.maximum(views[0], views[1])  # a new array in x's memory order (channel-major after a conv)
    argmax = xp.empty_like(y, dtype=xp.uint8)  # offset of the maximum in each window
    xp.greater(views[1], views[0], out=argmax)  # 1 where offset 1 wins; strict, so ties keep offset 0
    for offset in range(2, k):
        better = views[offset] > y
        xp.maximum(y, views[offset], out=y)
        # argmax = offset where better, else unchanged. Offsets only grow, so a maximum does it:
        # max(argmax, better * offset). (np.copyto(argmax, offset, where=better) is 6x slower.)
        xp.maximum(argmax, better.view(xp.uint8) * xp.uint8(offset), out=argmax)
    return y, argmax


def _maxpool_1d_backward(gy, x, argmax, axis: int, k: int, s: int):
    """Send each output gradient to the input position that won its window (x: the pass's input)."""
    xp = backend.get_array_module(gy)
    n_out = gy.shape[axis]
    tiled = s == k and x.shape[axis] == n_out * k  # windows cover every input position exactly once
    # same memory order as x; where windows skip positions (a floored remainder, a gap) they keep gradient 0
    gx = xp.empty_like(x) if tiled else xp.zeros_like(x)
    targets = [gx[_along(axis, _window(offset, n_out, s), gy.ndim)] for offset in range(k)]
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


# -- validation shared by the functional API and the layers ----------------------

def check_input(x, weight, where: str, spatial_dims: int | None = None) -> None:
    """Raise a clear error for a wrong rank, an empty batch, or a dtype/backend mismatch."""
    if spatial_dims is not None and x.ndim != 2 + spatial_dims:
        letters = {1: "(N, C, W)", 2: "(N, C, H, W)", 3: "(N, C, T, H, W)"}.get(spatial_dims, f"{2 + spatial_dims}-D")
        raise ValueError(f"{where}: expected a {2 + spatial_dims}-D input {letters}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: empty batch (input shape {tuple(x.shape)})")
    if weight is None:
        return
    if backend.backend_name(x) != backend.backend_name(weight):
        raise TypeError(f"{where}: input is a {backend.backend_name(x)} array but the weights are "
                        f"{backend.backend_name(weight)}; move one with tf.gpu(...) or tf.cpu(...)")
    if x.dtype != weight.dtype:
        raise TypeError(f"{where}: expected {weight.dtype} input like the weights, got {x.dtype} "
                        f"(convert with x.astype('{weight.dtype}'))")


def conv(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, pad=0, *, where: str = "conv") -> Tensor:
    """N-d convolution (cross-correlation) of ``x`` with ``w``.

    Args:
        x: (N, C, *S) input; w: (O, C, *K) kernels; b: (O,) bias or None.
        stride, pad: an int or one value per spatial axis; pad adds zeros on both sides.
    Returns:
        (N, O, *Q) with Q = floor((S + 2*pad - K) / stride) + 1.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    d = w.ndim - 2
    check_input(x.data, w.data, where, d)
    stride = as_tuple(stride, d, f"{where} stride", minimum=1)
    pad = as_tuple(pad, d, f"{where} pad")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{where}: expected input with {w.shape[1]} channel{'s' * (w.shape[1] != 1)}, "
                         f"got {x.shape[1]} (shape {tuple(x.shape)})")
    for sz, k, p in zip(x.shape[2:], w.shape[2:], pad):
        if sz + 2 * p < k:
            raise ValueError(f"{where}: input spatial size {tuple(x.shape[2:])} with padding {pad} "
                             f"is smaller than the kernel {tuple(w.shape[2:])}")
    inputs = (x, w) if b is None else (x, w, b)
    return Conv(stride, pad).apply(*inputs)


def maxpool(x: Tensor, window, stride=None, *, where: str = "maxpool") -> Tensor:
    """Largest value in each window; ``stride`` defaults to the window (no overlap).

    Args:
        x: (N, C, *S); window: an int or one size per spatial axis.
    Returns:
        (N, C, *Q), Q = floor((S - window) / stride) + 1 (a 7x7 input gives 3x3 for 2x2 windows).
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    d = len(window) if not isinstance(window, int) else x.ndim - 2
    window = as_tuple(window, d, f"{where} window", minimum=1)
    stride = window if stride is None else as_tuple(stride, d, f"{where} stride", minimum=1)
    check_input(x.data, None, where, d)
    if any(sz < k for sz, k in zip(x.shape[2:], window)):
        raise ValueError(f"{where}: input spatial size {tuple(x.shape[2:])} is smaller than the window {window}")
    return MaxPool(window, stride).apply(x)
