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

The copies themselves are the backend's: ``ops.im2col`` and ``ops.col2im``
(``tinyflux/backends``). The NumPy ones are :func:`im2col` and
:func:`col2im`, and for stride 1 :func:`im2col_shifted`, which builds the same
columns faster from one contiguous slice per kernel offset (see its
docstring); on a GPU each is one launch of tinyflux's own kernel.

Max-pooling keeps, for every window, the largest value and which of the
window's offsets it came from (the first one, on ties); backward sends each
output gradient to exactly that one input. The NumPy code runs one spatial
axis at a time (a window's maximum is the maximum of its rows' maxima).

A stride-1 convolution whose output goes straight into max-pooling with
windows of k (stride k) can be one op, :class:`ConvMaxPoolFunction`: with
q = k*u + r per axis (u the pooled position, r the offset inside the window),

    pooled[o, n, u] = max over r of y[o, n, k*u + r]

and when im2col orders its columns by r first (``ops.im2col_pooled``), the
GEMM writes each r as one contiguous block and the maximum runs over whole
blocks (``ops.maxpool_blocks``). ``nn.Chain`` uses it where it applies.
"""
from __future__ import annotations

import math

from ..backends import get_array_module, ops_for
from ..backends.arrays import backend_name
from ..backends.geometry import channels_first, index_along, output_size, pooled_inside, pooled_to_batch_first
# im2col and col2im (plain and shifted) are NumPy's ops, named here too because this docstring explains them
from ..backends.numpy_ops import col2im, col2im_shifted, extended_gradient, im2col, im2col_shifted  # noqa: F401
from ..checks import as_tuple, check_input
from .activations import bias_relu as bias_relu_op
from ..tensor import Function, Tensor, as_tensor


class ConvFunction(Function):
    """The convolution as one GEMM over im2col columns (``nn.Conv`` is the layer that calls it)."""

    def __init__(self, stride: tuple, pad: tuple):
        self.stride, self.pad = stride, pad

    def forward(self, x, w, b=None):
        self.ops = ops = ops_for(x)
        xp = get_array_module(x)
        o, c = w.shape[:2]
        kernel = tuple(w.shape[2:])
        d = len(kernel)
        self.columns = ops.im2col(x, kernel, self.stride, self.pad)  # col (C, *K, N, *E), E the positions computed
        self.out = tuple(output_size(sz, k, st, p) for sz, k, st, p in zip(x.shape[2:], kernel, self.stride, self.pad))
        col_mat = self.columns.col.reshape(c * math.prod(kernel), -1)  # (C, *K, N, *E) -> (C*prod(K), N*E)
        self.w = w
        y = ops.matmul(w.reshape(o, -1), col_mat)  # (O, C*prod(K)) @ (C*prod(K), N*E) -> (O, N*E)
        if b is not None:
            y += b[:, None]  # (O,) -> (O, 1), broadcast over all positions
        y = y.reshape((o,) + self.columns.extended)  # (O, N*E) -> (O, N, *E)
        if self.columns.shifted:  # drop the extra positions; the copy makes the rows contiguous again,
            # which pooling runs faster on
            y = xp.ascontiguousarray(y[(slice(None), slice(None)) + tuple(slice(0, q) for q in self.out)])
        return y.transpose(channels_first(d))  # (O, N, *Q) -> (N, O, *Q) view, memory stays channel-major

    def backward(self, gy, needs):
        w, ops, columns = self.w, self.ops, self.columns
        o = w.shape[0]
        d = w.ndim - 2
        xp = get_array_module(gy)
        gy_cn = gy.transpose(channels_first(d))  # (N, O, *Q) -> (O, N, *Q)
        if columns.shifted:  # back to the extended positions; the extra ones get gradient 0
            gy_ext = xp.empty((o,) + columns.extended, dtype=gy.dtype)  # (O, N, *E)
            gy_ext[(slice(None), slice(None)) + tuple(slice(0, q) for q in self.out)] = gy_cn
            for axis in range(3, gy_ext.ndim):  # zero only the extra positions past Q on the later axes
                gy_ext[index_along(axis, slice(self.out[axis - 2], None), gy_ext.ndim)] = 0
            gy_mat = gy_ext.reshape(o, -1)  # (O, N, *E) -> (O, N*E)
        else:
            gy_mat = gy_cn.reshape(o, -1)  # (O, N, *Q) -> (O, N*P), a copy unless gy is channel-major
        col_mat = columns.col.reshape(-1, gy_mat.shape[1])  # -> (C*prod(K), N*E)
        gx = gw = gb = None
        if needs[0]:
            gcol = ops.matmul(w.reshape(o, -1).T, gy_mat)  # (C*prod(K), O) @ (O, N*E) -> (C*prod(K), N*E)
            gx = ops.col2im(gcol.reshape(columns.col.shape), columns)  # (C*prod(K), N*E) -> (C, *K, N, *E)
        if needs[1]:
            # (C*prod(K), N*E) @ (N*E, O) -> (C*prod(K), O), transposed to (O, C*prod(K)) -> (O, C, *K).
            # Same numbers as gy_mat @ col_mat.T; OpenBLAS runs this orientation 10-20% faster here.
            gw = ops.matmul(col_mat, gy_mat.T).T.reshape(w.shape)
        if len(needs) > 2 and needs[2]:
            gb = gy_mat.sum(axis=1)  # (O,)
        return gx, gw, gb


class ConvMaxPoolFunction(Function):
    """A stride-1 convolution and the max-pooling after it, as one op: ``maxpool(conv(x, w))``, or with a
    bias b, ``relu(maxpool(conv(x, w)) + b)`` (which equals maxpool(relu(conv(x, w, b)))).

    Same numbers as the ops one after the other, with the columns ordered by
    pooling-window offset (``ops.im2col_pooled``): the GEMM's output then holds
    each window offset as one contiguous block, and the pooling compares whole
    blocks (``ops.maxpool_blocks``) instead of every other element. Backward runs
    the same steps in reverse: the pooled gradient goes to the winning block,
    then the two GEMMs and col2im of :class:`ConvFunction`.

    A backend may instead compute the whole op itself, where its
    ``direct_conv_pool`` says so: ``NumbaOps`` does, directly for 2x2x2 windows
    and larger (``tinyflux/backends/numba_ops.py`` explains why it is faster
    there) and with columns in cache-sized blocks for smaller ones
    (``numba_blocks.py``). The bias and ReLU come into the op for such a
    backend: on the pooled buffer it writes, they are one more pass instead of
    an op of their own over a strided view.
    """

    def __init__(self, pad: tuple, window: tuple):
        self.pad, self.window = pad, window

    def forward(self, x, w, b=None):
        self.ops = ops = ops_for(x)
        self.w = w
        self.with_bias = b is not None
        # a backend with its own kernel for this dtype and window (NumbaOps) keeps no whole-batch columns
        self.direct = ops.direct_conv_pool(x.dtype, self.window)
        if self.direct:
            pooled, self.saved = ops.conv_pool(x, w, self.pad, self.window, b)  # (N, O, *U)
            return pooled
        o = w.shape[0]
        d = w.ndim - 2
        self.col, self.geometry = ops.im2col_pooled(x, tuple(w.shape[2:]), self.pad, self.window)
        self.col_mat = self.col.reshape(math.prod(w.shape[1:]), -1)  # (C, *K, *k, E) -> (C*prod(K), k^d*E)
        y = ops.matmul(w.reshape(o, -1), self.col_mat)  # (O, C*prod(K)) @ (C*prod(K), k^d*E) -> (O, k^d*E)
        y = y.reshape((o,) + self.window + self.geometry.extended)  # -> (O, *k, U1, N, L2, ...)
        pooled, self.passes = ops.maxpool_blocks(y, d)  # (O, U1, N, L2, ...)
        inside = pooled[pooled_inside(self.geometry)]  # (O, U1, N, U2, ...)
        pooled = inside.transpose(pooled_to_batch_first(d))  # (O, U1, N, U2, ...) -> (N, O, U1, U2, ...) view
        if b is None:
            return pooled
        self.activated = ops.bias_relu(pooled, b)  # the numbers BiasReLU gives
        return self.activated

    def backward(self, gy, needs):
        if self.direct:
            return self.ops.conv_pool_backward(gy, self.w, self.saved, needs)
        w, ops, geometry = self.w, self.ops, self.geometry
        o = w.shape[0]
        gb = None
        if self.with_bias:  # as BiasReLU.backward
            gy, gb = ops.bias_relu_backward(gy, self.activated, needs[2])
        gy_ext = extended_gradient(gy, geometry)  # (N, O, U1, U2, ...) -> (O, U1, N, L2, ...), 0 at extra positions
        gy_mat = ops.maxpool_blocks_backward(gy_ext, self.passes).reshape(o, -1)  # (O, *k, *E) -> (O, k^d*E)
        gx = gw = None
        if needs[0]:
            gcol = ops.matmul(w.reshape(o, -1).T, gy_mat)  # (C*prod(K), O) @ (O, k^d*E) -> (C*prod(K), k^d*E)
            gx = ops.col2im_pooled(gcol.reshape(self.col.shape), geometry)  # -> (C, *K, *k, E) -> (N, C, *S)
        if needs[1]:
            # (C*prod(K), k^d*E) @ (k^d*E, O) -> (C*prod(K), O), transposed to (O, C*prod(K)) -> (O, C, *K),
            # the orientation ConvFunction.backward uses
            gw = ops.matmul(self.col_mat, gy_mat.T).T.reshape(w.shape)
        return (gx, gw, gb) if self.with_bias else (gx, gw)


class MaxPoolFunction(Function):
    """Max-pooling (``nn.MaxPool`` is the layer that calls it): the largest value of each window, and which."""

    def __init__(self, window: tuple, stride: tuple):
        self.window, self.stride = window, stride

    def forward(self, x):
        self.ops = ops_for(x)
        y, self.saved = self.ops.maxpool(x, self.window, self.stride)
        return y

    def backward(self, gy, needs):
        return (self.ops.maxpool_backward(gy, self.saved),)


def _checked_conv_input(x: Tensor, w: Tensor, pad, caller: str) -> tuple:
    """Check x against the kernels w (rank, dtype, channels, size); return pad as one value per spatial axis."""
    d = w.ndim - 2
    check_input(x.data, w.data, caller, d)
    pad = as_tuple(pad, d, f"{caller} pad")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{caller}: expected input with {w.shape[1]} channel{'s' * (w.shape[1] != 1)}, "
                         f"got {x.shape[1]} (shape {tuple(x.shape)})")
    for sz, k, p in zip(x.shape[2:], w.shape[2:], pad):
        if sz + 2 * p < k:
            raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} with padding {pad} "
                             f"is smaller than the kernel {tuple(w.shape[2:])}")
    return pad


def _check_bias(b: Tensor, w: Tensor, caller: str) -> None:
    """Refuse a bias that is not one number per output channel, or not of the weights' dtype and device
    (the kernels that add it read b[o] for every output channel o)."""
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{caller}: expected a bias of shape ({w.shape[0]},), one number per output channel, "
                         f"got shape {tuple(b.shape)}")
    if b.dtype != w.dtype or backend_name(b.data) != backend_name(w.data):
        raise TypeError(f"{caller}: expected a {backend_name(w.data)} {w.dtype} bias like the weights, "
                        f"got a {backend_name(b.data)} {b.dtype} one")


def conv(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, pad=0, *, caller: str = "conv") -> Tensor:
    """N-d convolution (cross-correlation) of ``x`` with ``w``.

    Args:
        x: (N, C, *S) input; w: (O, C, *K) kernels; b: (O,) bias or None.
        stride, pad: an int or one value per spatial axis; pad adds zeros on both sides.
        caller: how error messages name the caller (a layer passes its signature).
    Returns:
        (N, O, *Q) with Q = floor((S + 2*pad - K) / stride) + 1.
    """
    x = as_tensor(x)
    d = w.ndim - 2
    stride = as_tuple(stride, d, f"{caller} stride", minimum=1)
    pad = _checked_conv_input(x, w, pad, caller)
    ones = (1,) * d
    if stride == ones and ops_for(x.data).direct_conv_pool(x.data.dtype, ones):
        # A backend with kernels of its own (NumbaOps) computes a stride-1 convolution as a convolution-pooling
        # whose windows hold one position: columns one cache-sized block at a time, never the whole batch's
        # (for 3 x 27 kernel terms of a clip, 81 times the clip).
        y = ConvMaxPoolFunction(pad, ones).apply(x, w)
        return y if b is None else y + b.reshape((1, -1) + ones)  # (O,) -> (1, O, 1, ...): one bias per channel
    inputs = (x, w) if b is None else (x, w, b)
    return ConvFunction(stride, pad).apply(*inputs)


def conv_maxpool(x: Tensor, w: Tensor, pad=0, window=2, *, bias_relu: Tensor | None = None,
                 caller: str = "conv") -> Tensor:
    """``maxpool(conv(x, w, None, 1, pad), window)``: a stride-1 convolution without bias, then max-pooling;
    with ``bias_relu`` = b (O,), ``relu(that + b)``, which equals maxpool(relu(conv(x, w, b))).

    One :class:`ConvMaxPoolFunction` where the backend has it (``ops.pools_in_columns``),
    else the ops one after the other; the result is the same either way.
    """
    x = as_tensor(x)
    d = w.ndim - 2
    window = as_tuple(window, d, f"{caller} pooling window", minimum=1)
    if bias_relu is not None:
        bias_relu = as_tensor(bias_relu)
        _check_bias(bias_relu, w, caller)
    if not getattr(ops_for(x.data), "pools_in_columns", False):
        pooled = maxpool(conv(x, w, None, 1, pad, caller=caller), window, caller=caller)
        return pooled if bias_relu is None else bias_relu_op(pooled, bias_relu)
    pad = _checked_conv_input(x, w, pad, caller)
    for sz, k, p, pool in zip(x.shape[2:], w.shape[2:], pad, window):
        if sz + 2 * p - k + 1 < pool:
            raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} with padding {pad} gives a "
                             f"convolution output smaller than the pooling window {window}")
    if bias_relu is None:
        return ConvMaxPoolFunction(pad, window).apply(x, w)
    return ConvMaxPoolFunction(pad, window).apply(x, w, bias_relu)


def maxpool(x: Tensor, window, stride=None, *, caller: str = "maxpool") -> Tensor:
    """Largest value in each window; ``stride`` defaults to the window (no overlap).

    Args:
        x: (N, C, *S); window: an int or one size per spatial axis.
    Returns:
        (N, C, *Q), Q = floor((S - window) / stride) + 1 (a 7x7 input gives 3x3 for 2x2 windows).
    """
    x = as_tensor(x)
    d = len(window) if not isinstance(window, int) else x.ndim - 2
    window = as_tuple(window, d, f"{caller} window", minimum=1)
    stride = window if stride is None else as_tuple(stride, d, f"{caller} stride", minimum=1)
    check_input(x.data, None, caller, d)
    if any(sz < k for sz, k in zip(x.shape[2:], window)):
        raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} is smaller than the window {window}")
    return MaxPoolFunction(window, stride).apply(x)
