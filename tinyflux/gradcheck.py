"""Numerical gradient checking: does backward() agree with finite differences?

For a function f and a random weighting v of its outputs, take the scalar
L(x) = sum(v * f(x)). Its derivative along any direction d is approximated by
the central difference

    (L(x + eps*d) - L(x - eps*d)) / (2*eps)     (error O(eps**2))

and must equal sum(grad_L * d), where grad_L comes from backward(). For a
small input every element is perturbed in turn (d = each unit vector), which
also gives the numerical Jacobian df/dx; it is compared row by row with
backward() run once per output (or, for many outputs, with a few random v).
For a large input a few random directions d keep the cost at a few evaluations.
Everything runs in float64, where eps = 1e-6 leaves about 1e-10 of rounding.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .backends import get_array_module
from .tensor import Tensor


class GradcheckError(AssertionError):
    """backward() and the finite differences disagree."""


def gradcheck(f: Callable, *inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              max_full: int = 300, directions: int = 3, seed: int = 0) -> bool:
    """Check the gradients of ``f`` with respect to every floating-point input.

    Args:
        f: takes Tensors (one per input) and returns a Tensor.
        inputs: arrays or Tensors; floating ones are copied to float64 and checked,
            others (integer labels...) are passed through unchanged.
        eps: finite-difference step;
        atol, rtol: tolerance |analytic - numeric| <= atol + rtol*|numeric|.
        max_full: inputs with at most this many elements get the full Jacobian check.
        directions: number of random directions for larger inputs.
    Returns:
        True; raises :class:`GradcheckError` with the worst mismatch otherwise.

    >>> import tinyflux as tf, numpy as np
    >>> tf.gradcheck(lambda a, b: a * b + a, np.random.rand(3), np.random.rand(3))
    True
    """
    rng = np.random.default_rng(seed)
    tensors = []
    for x in inputs:
        data = x.data if isinstance(x, Tensor) else x
        if hasattr(data, "dtype") and data.dtype.kind == "f":
            tensors.append(Tensor(data.astype(np.float64), requires_grad=True))
        else:
            tensors.append(x)

    def evaluate(*args):
        out = f(*args)
        return out.data if isinstance(out, Tensor) else out

    y = evaluate(*tensors)
    xp = get_array_module(y)
    weights = xp.asarray(rng.standard_normal(y.shape))  # the random v of L = sum(v * f)

    def analytic(v):
        for t in tensors:
            if isinstance(t, Tensor):
                t.grad = None
        out = f(*tensors)
        out.backward(v)
        return [t.grad if isinstance(t, Tensor) and t.requires_grad else None for t in tensors]

    grads = analytic(weights)
    for index, t in enumerate(tensors):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        grad = xp.zeros_like(t.data) if grads[index] is None else grads[index]
        base = t.data

        def shifted(delta, t=t, base=base):  # bound now: used only within this iteration
            t.data = base + delta
            try:
                return evaluate(*tensors)
            finally:
                t.data = base

        if t.size <= max_full:
            _check_full_jacobian(shifted, analytic, index, grad, weights, y, rng, eps, atol, rtol)
        else:
            for _ in range(directions):
                d = xp.asarray(rng.standard_normal(t.shape))
                d /= xp.sqrt((d * d).sum())
                difference = (shifted(eps * d) - shifted(-eps * d)) * weights
                numeric = float(difference.sum() / (2 * eps))
                exact = float((grad * d).sum())
                _compare(exact, numeric, atol, rtol, f"input {index} (random direction)")
    for t in tensors:
        if isinstance(t, Tensor):
            t.grad = None
    return True


def _check_full_jacobian(shifted, analytic, index, grad, weights, y, rng, eps, atol, rtol) -> None:
    """Input ``index`` against its whole numerical Jacobian,
    J[:, j] = df/dx_j, seen through several v^T J.

    ``shifted(delta)`` evaluates f with the input moved by delta; ``analytic(v)`` runs backward(v).
    """
    xp = get_array_module(grad)
    jacobian = xp.empty((y.size, grad.size))
    for j in range(grad.size):
        d = xp.zeros(grad.size)
        d[j] = eps
        d = d.reshape(grad.shape)
        jacobian[:, j] = ((shifted(d) - shifted(-d)) / (2 * eps)).reshape(-1)
    if y.size <= 16:  # compare every row: backward once per output element
        vs = [xp.eye(y.size)[i].reshape(y.shape) for i in range(y.size)]
        rows = [analytic(v)[index] for v in vs]
    else:  # the random weighting already computed, plus two more
        vs = [weights] + [xp.asarray(rng.standard_normal(y.shape)) for _ in range(2)]
        rows = [grad] + [analytic(v)[index] for v in vs[1:]]
    for v, row in zip(vs, rows):
        row = xp.zeros_like(grad) if row is None else row
        numeric = (v.reshape(-1) @ jacobian).reshape(grad.shape)  # v^T J
        _compare(row, numeric, atol, rtol, f"input {index} (full Jacobian)")


def _compare(exact, numeric, atol, rtol, what):
    xp = get_array_module(exact)
    exact, numeric = xp.asarray(exact), xp.asarray(numeric)
    error = xp.abs(exact - numeric)
    limit = atol + rtol * xp.abs(numeric)
    if bool((error > limit).any()):
        worst = int(xp.argmax(error - limit))
        raise GradcheckError(f"gradcheck failed for {what}: backward gives "
                             f"{float(exact.reshape(-1)[worst]):.6g}, finite differences "
                             f"{float(numeric.reshape(-1)[worst]):.6g} (|difference| "
                             f"{float(error.reshape(-1)[worst]):.3g} > tolerance "
                             f"{float(limit.reshape(-1)[worst]):.3g})")
