"""The affine map of a dense layer: y = x @ w.T + b.

With x (N, I), w (O, I), b (O,): y (N, O). Gradients: gx = gy @ w (N, I),
gw = gy.T @ x (O, I), gb = sum of gy over the batch (O,).
"""
from __future__ import annotations

from ..backends import ops_for
from ..checks import check_input
from ..tensor import Function, Tensor, as_tensor


class Linear(Function):
    def forward(self, x, w, b=None):
        self.x, self.w, self.ops = x, w, ops_for(x)
        y = self.ops.matmul(x, w.T)  # (N, I) @ (I, O) -> (N, O)
        if b is not None:
            y += b  # (O,) broadcasts over the N rows
        return y

    def backward(self, gy, needs):
        gx = self.ops.matmul(gy, self.w) if needs[0] else None  # (N, O) @ (O, I) -> (N, I)
        gw = self.ops.matmul(gy.T, self.x) if needs[1] else None  # (O, N) @ (N, I) -> (O, I)
        gb = gy.sum(axis=0) if len(needs) > 2 and needs[2] else None
        return gx, gw, gb


def linear(x: Tensor, w: Tensor, b: Tensor | None = None, *, caller: str = "linear") -> Tensor:
    """x @ w.T + b for x (N, in), w (out, in), b (out,);
    ``caller`` names the caller in error messages."""
    x = as_tensor(x)
    check_input(x.data, w.data, caller)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"{caller}: expected input of shape (N, "
                         f"{w.shape[1]}), got {tuple(x.shape)}")
    return Linear().apply(*((x, w) if b is None else (x, w, b)))


def flatten(x: Tensor) -> Tensor:
    """(N, ...) -> (N, prod(...)): keeps the batch axis, flattens the rest in C order."""
    x = as_tensor(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("flatten: expected a non-empty batch (N, ...), "
                         f"got shape {tuple(x.shape)}")
    # (N, C, H, W) -> (N, C*H*W); copies when memory is channel-major
    return x.reshape(x.shape[0], -1)
