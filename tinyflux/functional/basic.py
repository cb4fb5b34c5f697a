"""Elementwise arithmetic, matrix product and shape operations, with their gradients.

For elementwise ops the vector-Jacobian products are the school derivatives:
``y = a + b``: ga = gy, gb = gy; ``y = a * b``: ga = gy * b, gb = gy * a;
``y = a / b``: ga = gy / b, gb = -gy * a / b**2. When NumPy broadcasting
stretched an input (a bias of shape (C,) added to (N, C)), its gradient is the
sum of gy over the stretched axes (:func:`sum_to`).

For a matrix product ``Y = A @ B``: gA = gY @ B.T and gB = A.T @ gY, which
have the shapes of A and B (check: (N, K) = (N, M) @ (M, K)).
"""
from __future__ import annotations

import math
import numbers

from ..backends import get_array_module, ops_for
from ..tensor import Function, Tensor


def sum_to(g, shape: tuple):
    """Sum the broadcast axes of ``g`` away so that it has ``shape`` (undoes broadcasting)."""
    if tuple(g.shape) == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    stretched = tuple(i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1)
    axes = tuple(range(extra)) + stretched
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)  # drop the leading axes that broadcasting added


def as_tensor(value, like: Tensor) -> Tensor:
    """Wrap an operand; a Python number takes the dtype of ``like`` so float32 stays float32."""
    if isinstance(value, Tensor):
        return value
    xp = get_array_module(like.data)
    if isinstance(value, numbers.Number):
        return Tensor(xp.asarray(value, dtype=like.dtype))
    return Tensor(value)


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy, needs):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy, needs):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy, needs):
        ga = sum_to(gy * self.b, self.a.shape) if needs[0] else None
        gb = sum_to(gy * self.a, self.b.shape) if needs[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy, needs):
        ga = sum_to(gy / self.b, self.a.shape) if needs[0] else None
        gb = sum_to(-gy * self.a / (self.b * self.b), self.b.shape) if needs[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy, needs):
        return (-gy,)


class Pow(Function):
    """y = x ** p for a constant number p: gx = gy * p * x ** (p - 1)."""

    def __init__(self, exponent: float):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy, needs):
        return (gy * self.exponent * self.x ** (self.exponent - 1),)


class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy, needs):
        return (gy * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy, needs):
        return (gy / self.x,)


class MatMul(Function):
    """Matrix product of two 2-D arrays: (N, M) @ (M, K) -> (N, K)."""

    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul: expected two 2-D arrays, got shapes {a.shape} and {b.shape}")
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: inner sizes differ: {a.shape} @ {b.shape}")
        self.a, self.b = a, b
        return ops_for(a).matmul(a, b)

    def backward(self, gy, needs):
        ops = ops_for(gy)
        ga = ops.matmul(gy, self.b.T) if needs[0] else None  # (N, K) @ (K, M) -> (N, M)
        gb = ops.matmul(self.a.T, gy) if needs[1] else None  # (M, N) @ (N, K) -> (M, K)
        return ga, gb


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy, needs):
        return (gy.reshape(self.x_shape),)  # the gradient goes back to the input's shape


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.ndim = x.ndim
        return x.transpose(self.axes)

    def backward(self, gy, needs):
        if self.axes is None:
            return (gy.transpose(),)
        inverse = [0] * self.ndim  # the permutation that undoes self.axes
        for i, axis in enumerate(self.axes):
            inverse[axis % self.ndim] = i
        return (gy.transpose(inverse),)


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy, needs):
        xp = get_array_module(gy)
        if not self.keepdims and self.axis is not None:
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            for axis in sorted(a % len(self.x_shape) for a in axes):
                gy = xp.expand_dims(gy, axis)  # put back the summed axes as size 1
        return (xp.broadcast_to(gy, self.x_shape),)


class Pad(Function):
    """Constant padding of the spatial axes: (N, C, *S) -> (N, C, *(S + before + after))."""

    def __init__(self, before: tuple, after: tuple, value: float):
        self.before, self.after, self.value = before, after, value

    def forward(self, x):
        xp = get_array_module(x)
        widths = [(0, 0), (0, 0)] + list(zip(self.before, self.after))
        return xp.pad(x, widths, constant_values=self.value)

    def backward(self, gy, needs):
        # batch and channels whole; each spatial axis without its padding
        inside = (slice(None), slice(None)) + tuple(
            slice(b, gy.shape[2 + i] - a) for i, (b, a) in enumerate(zip(self.before, self.after)))
        return (gy[inside],)


# -- the functional API ------------------------------------------------------------

def _binary(function_class, a, b) -> Tensor:
    """Apply a two-input Function; a plain number on either side takes the other side's dtype."""
    a = a if isinstance(a, Tensor) else as_tensor(a, b)
    return function_class().apply(a, as_tensor(b, a))


def add(a, b) -> Tensor:
    return _binary(Add, a, b)


def sub(a, b) -> Tensor:
    return _binary(Sub, a, b)


def mul(a, b) -> Tensor:
    return _binary(Mul, a, b)


def div(a, b) -> Tensor:
    return _binary(Div, a, b)


def neg(x: Tensor) -> Tensor:
    return Neg().apply(x)


def exp(x: Tensor) -> Tensor:
    return Exp().apply(x)


def log(x: Tensor) -> Tensor:
    return Log().apply(x)


def matmul(a, b) -> Tensor:
    return _binary(MatMul, a, b)


def reshape(x: Tensor, *shape) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    # Checked here rather than left to the array library, so NumPy and CuPy give the same message
    size, known = math.prod(x.shape), math.prod(d for d in shape if d != -1)
    unknown = shape.count(-1)
    if unknown > 1 or (unknown and (known == 0 or size % known)) or (not unknown and known != size):
        raise ValueError(f"reshape: cannot reshape shape {tuple(x.shape)} "
                         f"({size} values) into {shape}")
    return Reshape(shape).apply(x)


def transpose(x: Tensor, *axes) -> Tensor:
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose(axes or None).apply(x)


def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 (mirrors numpy)
    return Sum(axis, keepdims).apply(x)


def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    total = sum(x, axis, keepdims)
    return mul(total, total.size / x.size)  # divide by the number of elements averaged


def pad(x: Tensor, before: tuple, after: tuple, value: float = 0.0) -> Tensor:
    """``x`` (N, C, *S) with ``before[i]`` and
    ``after[i]`` values ``value`` added on spatial axis i."""
    return Pad(tuple(before), tuple(after), value).apply(x)


def _install_operators() -> None:
    """Give Tensor its operators: ``a + b`` calls ``add(a, b)`` and so on."""
    Tensor.__add__ = lambda a, b: add(a, b)
    Tensor.__radd__ = lambda a, b: add(b, a)
    Tensor.__sub__ = lambda a, b: sub(a, b)
    Tensor.__rsub__ = lambda a, b: sub(b, a)
    Tensor.__mul__ = lambda a, b: mul(a, b)
    Tensor.__rmul__ = lambda a, b: mul(b, a)
    Tensor.__truediv__ = lambda a, b: div(a, b)
    Tensor.__rtruediv__ = lambda a, b: div(b, a)
    Tensor.__neg__ = neg
    Tensor.__pow__ = lambda x, p: Pow(p).apply(x)
    Tensor.__matmul__ = lambda a, b: matmul(a, b)
    Tensor.__rmatmul__ = lambda a, b: matmul(b, a)
    Tensor.reshape = reshape
    Tensor.transpose = transpose
    Tensor.T = property(lambda x: transpose(x))
    Tensor.sum = sum
    Tensor.mean = mean
    Tensor.exp = exp
    Tensor.log = log


_install_operators()
