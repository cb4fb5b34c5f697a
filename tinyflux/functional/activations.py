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

from ..backends import get_array_module, ops_for
from ..tensor import Function, Tensor


class ReLU(Function):
    def forward(self, x):
        self.ops = ops_for(x)
        self.y = get_array_module(x).maximum(x, 0)
        return self.y

    def backward(self, gy, needs):
        return (self.ops.relu_backward(gy, self.y),)


class BiasReLU(Function):
    """y = relu(x + b) with one bias per channel (axis 1):
    one node instead of two, one new array instead of two."""

    def forward(self, x, b):
        self.ops = ops_for(x)
        self.y = self.ops.bias_relu(x, b)
        return self.y

    def backward(self, gy, needs):
        return self.ops.bias_relu_backward(gy, self.y, needs[1])


class Softmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
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
        self.y = log_softmax_array(x, self.axis)
        return self.y

    def backward(self, gy, needs):
        # dL/dx_i = g_i - p_i * sum_j g_j, with p = exp(log-softmax)
        xp = get_array_module(gy)
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


def log_softmax_array(x, axis: int):
    """log(softmax(x)) of a plain array along ``axis``,
    computed stably (the forward of LogSoftmax)."""
    xp = get_array_module(x)
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
