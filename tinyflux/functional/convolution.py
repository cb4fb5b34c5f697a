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

from ..backends import ops_for
from ..backends.arrays import backend_name
# im2col and col2im (plain and shifted) are NumPy's copies,
# named here too because this docstring explains them
from ..backends.columns import col2im, col2im_shifted, im2col, im2col_shifted  # noqa: F401
from ..checks import as_tuple, check_input
from ..tensor import Function, Tensor, as_tensor


class ConvFunction(Function):
    """The convolution (``nn.Conv`` is the layer that
    calls it): one call to the backend's ``ops.conv``.

    NumpyOps builds the im2col columns and runs one GEMM, as the module docstring
    derives; backward is the two GEMMs and col2im. A backend may take another
    route inside its ``conv``: ``NumbaOps`` computes a stride-1 convolution as a
    convolution-pooling whose windows hold one position (see ``numba_ops.py``).
    """

    def __init__(self, stride: tuple, pad: tuple):
        self.stride, self.pad = stride, pad

    def forward(self, x, w, b=None):
        self.ops, self.w = ops_for(x), w
        y, self.saved = self.ops.conv(x, w, b, self.stride, self.pad)  # (N, O, *Q)
        return y

    def backward(self, gy, needs):
        return self.ops.conv_backward(gy, self.w, self.saved, needs)


class ConvMaxPoolFunction(Function):
    """A stride-1 convolution and the max-pooling after it, as one op: ``maxpool(conv(x, w))``, or
    with a bias b, ``relu(maxpool(conv(x, w)) + b)`` (which equals maxpool(relu(conv(x, w, b)))).

    One call to the backend's ``ops.conv_pool``, which decides how to compute it
    (each backend's docstring says why its way is faster there):

    - NumpyOps: with the columns ordered by pooling-window offset (``im2col_pooled``):
      with q = k*u + r per axis, the GEMM's output holds each window offset r as one
      contiguous block, and the pooling compares whole blocks instead of every
      other element; backward sends the pooled gradient to the winning block, then
      runs the two GEMMs and col2im of :class:`ConvFunction`;
    - NumbaOps: its own kernels, with columns in cache-sized blocks forward, and backward
      the same blocks or, for windows of 8 positions or more, kernels that visit the winners alone;
    - CudaOps: a convolution, then a pooling, each one launch of its own kernel.

    The bias and ReLU come into the op: on the pooled buffer it writes, they are
    one more pass instead of an op of their own over a strided view.
    """

    def __init__(self, pad: tuple, window: tuple):
        self.pad, self.window = pad, window

    def forward(self, x, w, b=None):
        self.ops, self.w = ops_for(x), w
        pooled, self.saved = self.ops.conv_pool(x, w, b, self.pad, self.window)  # (N, O, *U)
        return pooled

    def backward(self, gy, needs):
        return self.ops.conv_pool_backward(gy, self.w, self.saved, needs)


class MaxPoolFunction(Function):
    """Max-pooling (``nn.MaxPool`` is the layer that calls
    it): the largest value of each window, and which."""

    def __init__(self, window: tuple, stride: tuple):
        self.window, self.stride = window, stride

    def forward(self, x):
        self.ops = ops_for(x)
        y, self.saved = self.ops.maxpool(x, self.window, self.stride)
        return y

    def backward(self, gy, needs):
        return (self.ops.maxpool_backward(gy, self.saved),)


def _checked_conv_input(x: Tensor, w: Tensor, pad, caller: str) -> tuple:
    """Check x against the kernels w (rank, dtype, channels,
    size); return pad as one value per spatial axis."""
    d = w.ndim - 2
    check_input(x.data, w.data, caller, d)
    pad = as_tuple(pad, d, f"{caller} pad")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{caller}: expected input with {w.shape[1]} "
                         f"channel{'s' * (w.shape[1] != 1)}, got {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    for sz, k, p in zip(x.shape[2:], w.shape[2:], pad):
        if sz + 2 * p < k:
            raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} with padding "
                             f"{pad} is smaller than the kernel {tuple(w.shape[2:])}")
    return pad


def _check_bias(b: Tensor, w: Tensor, caller: str) -> None:
    """Refuse a bias that is not one number per output channel, or not of the weights' dtype and
    device (the kernels that add it read b[o] for every output channel o)."""
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{caller}: expected a bias of shape ({w.shape[0]},), one number per "
                         f"output channel, got shape {tuple(b.shape)}")
    if b.dtype != w.dtype or backend_name(b.data) != backend_name(w.data):
        raise TypeError(f"{caller}: expected a {backend_name(w.data)} {w.dtype} bias like the "
                        f"weights, got a {backend_name(b.data)} {b.dtype} one")


def conv(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, pad=0, *,
         caller: str = "conv") -> Tensor:
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
    inputs = (x, w) if b is None else (x, w, b)
    return ConvFunction(stride, pad).apply(*inputs)


def conv_maxpool(x: Tensor, w: Tensor, pad=0, window=2, *, bias_relu: Tensor | None = None,
                 caller: str = "conv") -> Tensor:
    """``maxpool(conv(x, w, None, 1, pad), window)``: a stride-1
    convolution without bias, then max-pooling; with ``bias_relu`` = b
    (O,), ``relu(that + b)``, which equals maxpool(relu(conv(x, w, b))).

    One :class:`ConvMaxPoolFunction`; the backend decides
    how it runs (the result is the same either way)."""
    x = as_tensor(x)
    d = w.ndim - 2
    window = as_tuple(window, d, f"{caller} pooling window", minimum=1)
    if bias_relu is not None:
        bias_relu = as_tensor(bias_relu)
        _check_bias(bias_relu, w, caller)
    pad = _checked_conv_input(x, w, pad, caller)
    for sz, k, p, pool in zip(x.shape[2:], w.shape[2:], pad, window):
        if sz + 2 * p - k + 1 < pool:
            raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} with padding "
                             f"{pad} gives a convolution output smaller than "
                             f"the pooling window {window}")
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
        raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} is smaller "
                         f"than the window {window}")
    return MaxPoolFunction(window, stride).apply(x)
