"""Argument checks shared by layers, functions and optimizers.

Each check names the argument and shows the value it got, so that a wrong
call fails at once with a message about *your* code, instead of later with
a NumPy error from deep inside a forward pass. ``what`` is the argument as
the caller wrote it ("Conv kernel", "Adam lr").

Integers: Python ints and NumPy integers are accepted; bools, floats (even
3.0) and strings are not, because a size of 2.5 has no meaning and quietly
rounding it hides a mistake.
"""
from __future__ import annotations

import math
import numbers

from .backends.arrays import backend_name


def is_integer(value) -> bool:
    """True for 3 and np.int64(3); False for True, 3.0 and "3"."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(value, what: str, minimum: int | None = None) -> int:
    """``value`` as an int, refused unless it is an integer of at least ``minimum``."""
    if not is_integer(value):
        raise TypeError(f"{what}: expected an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what}: must be at least {minimum}, got {value}")
    return int(value)


def as_tuple(value, ndim: int, what: str, minimum: int = 0) -> tuple:
    """3 -> (3, 3) for ndim 2; a sequence must have ndim integers, each at least ``minimum``."""
    if is_integer(value):
        values = (value,) * ndim
    elif isinstance(value, (tuple, list)):
        values = tuple(value)
    else:
        raise TypeError(f"{what}: expected an integer or {ndim} integers, got {value!r}")
    if len(values) != ndim:
        raise ValueError(f"{what}: expected an integer or {ndim} values, got {value}")
    if not all(is_integer(v) for v in values):
        raise TypeError(f"{what}: expected integers, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{what}: every value must be at least {minimum}, got {value}")
    return tuple(int(v) for v in values)


def real(value, what: str, minimum: float | None = None, below: float | None = None) -> float:
    """``value`` as a finite float in [minimum, below);
    strings, bools, NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what}: must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what}: must be at least {minimum:g}, got {value:g}")
    if below is not None and value >= below:
        raise ValueError(f"{what}: must be below {below:g}, got {value:g}")
    return value


def check_input(x, weight, caller: str, spatial_dims: int | None = None) -> None:
    """Refuse an input array of the wrong rank, an empty batch, or one on another device or of
    another dtype than the layer's weights (``weight``, or None)."""
    if spatial_dims is not None and x.ndim != 2 + spatial_dims:
        letters = {1: "(N, C, W)", 2: "(N, C, H, W)",
                   3: "(N, C, T, H, W)"}.get(spatial_dims, f"{2 + spatial_dims}-D")
        raise ValueError(f"{caller}: expected a {2 + spatial_dims}-D input {letters}, "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{caller}: empty batch (input shape {tuple(x.shape)})")
    if weight is None:
        return
    if backend_name(x) != backend_name(weight):
        raise TypeError(f"{caller}: input is a {backend_name(x)} array but the weights are "
                        f"{backend_name(weight)}; move one with tf.gpu(...) or tf.cpu(...)")
    if x.dtype != weight.dtype:
        raise TypeError(f"{caller}: expected {weight.dtype} input like the weights, got {x.dtype} "
                        f"(convert with x.astype('{weight.dtype}'))")
