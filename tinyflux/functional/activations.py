"""Activations: ReLU, softmax and log-softmax along the class axis.

ReLU: y = max(x, 0), so dy/dx is 1 where x > 0 and 0 elsewhere (we take
ReLU'(0) = 0, as PyTorch and Flux do).

Softmax turns scores x into probabilities p_i = exp(x_i) / sum_j exp(x_j).
Subtracting the row maximum m first changes nothing mathematically (it
cancels between numerator and denominator) but keeps exp() from overflowing.
Log-softmax is x_i - m - log(sum_j exp(x_j - m)), computed without ever
dividing, so it stays finite even when a probability underflows to 0.
"""
from __future__ import annotations

from .. import backend
from ..tensor import Function, Tensor


class ReLU(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.maximum(x, 0)
        self.y = y
        return y

    def backward(self, gy, needs):
        return (_relu_backward(gy, self.y),)


def _relu_backward(gy, y):
    """The gradient through a ReLU whose output was y: gy where y > 0, else 0."""
    cuda = backend.cuda_kernels(gy)
    if cuda is not None:
        return cuda.relu_backward(gy, y)  # one launch instead of a compare and a multiply
    # multiplying by a boolean mask is several times faster than np.where(y > 0, gy, 0)
    return gy * (y > 0)


class BiasReLU(Function):
    """y = relu(x + b) with one bias per channel (axis 1): one node instead of two, one new array instead of two."""

    def forward(self, x, b):
        xp = backend.get_array_module(x)
        cuda = backend.cuda_kernels(x)
        if cuda is not None:
            self.y = cuda.bias_relu(x, b)  # one launch instead of an add and a maximum
            return self.y
        shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...): broadcast over batch and positions
        y = x + b.reshape(shape)
        xp.maximum(y, 0, out=y)
        self.y = y
        return y

    def backward(self, gy, needs):
        gx = _relu_backward(gy, self.y)
        gb = gx.sum(axis=(0,) + tuple(range(2, gx.ndim))) if needs[1] else None  # sum over all but channels
        return gx, gb


class Softmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        z = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        self.y = z / z.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy, needs):
        # dL/dx_i = p_i * (g_i - sum_j g_j p_j)
        y = self.y
        return (y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        self.y = _log_softmax(x, self.axis)
        return self.y

    def backward(self, gy, needs):
        # dL/dx_i = g_i - p_i * sum_j g_j, with p = exp(log-softmax)
        xp = backend.get_array_module(gy)
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


def _log_softmax(x, axis):
    xp = backend.get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


def relu(x: Tensor) -> Tensor:
    """relu(x) = max(x, 0), elementwise."""
    return ReLU().apply(x)


def bias_relu(x: Tensor, b: Tensor) -> Tensor:
    """relu(x + b) for x (N, C, ...) and a per-channel bias b (C,)."""
    return BiasReLU().apply(x, b)


def softmax(x: Tensor, axis: int = 1) -> Tensor:
    """Probabilities along ``axis`` (the class axis of (N, classes) scores)."""
    return Softmax(axis).apply(x)


def log_softmax(x: Tensor, axis: int = 1) -> Tensor:
    """log(softmax(x)), computed stably."""
    return LogSoftmax(axis).apply(x)
