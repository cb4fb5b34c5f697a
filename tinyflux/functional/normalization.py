"""Batch and instance normalisation and average pooling (fixed and
adaptive), in 1-D, 2-D and 3-D; NumPy and CuPy alike (``xp``).

Batch normalisation (Ioffe & Szegedy, 2015) rescales every channel c of a
batch x (N, C, *S) to zero mean and unit variance over its m = N * prod(S)
values, then gives it a learned scale and shift:

    x_hat = (x - mean_c) / sqrt(var_c + eps),    y = gamma_c * x_hat + beta_c

In training, mean_c and var_c are the batch's (var biased, divided by m) and
running averages of them are kept (running <- (1 - momentum) running +
momentum batch, with the unbiased variance, as PyTorch and Flux do); in
evaluation the running ones are used, so an example's output does not depend
on the others of its batch. The backward pass of the training form, with
every sum over the m values of a channel:

    g_beta = sum(gy),   g_gamma = sum(gy * x_hat),
    gx = gamma / (m sqrt(var + eps)) * (m gy - g_beta - x_hat g_gamma)

Instance normalisation (Ulyanov et al., 2016) is the same rescaling done for
each example and channel apart, over that channel's positions S alone, with
no learned scale and no running statistics: every clip reaches the network
with zero mean and unit variance in each colour, whatever its tint, light and
contrast. Its backward pass is batch normalisation's training form with the
sums over the m = prod(S) positions of one example's channel, and gamma = 1.

Batch normalisation with ReLU followed by max-pooling (``nn.Chain`` sees the
pair) is one op, ``batch_norm_pool``: the same numbers, but a backend may
compute the pooled output straight from x and keep only x and which position
won each window, where the three ops write and read three full-size arrays.
Its backward pass is the one above with gy = the ReLU's and the pooling's
gradient: zero except at each window's winner where the ReLU was on.

Average pooling takes windows that tile the input (stride = window): each
output is the mean of its window; the gradient spreads gy / prod(window)
evenly over the window. Rows and columns past the last whole window are
dropped, as by max-pooling.
"""
from __future__ import annotations

import itertools
import math

from ..backends import get_array_module, ops_for
from ..checks import as_tuple
from ..tensor import Function, Tensor, as_tensor


class BatchNormFunction(Function):
    def __init__(self, running_mean, running_var, training: bool, momentum: float, eps: float):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def statistics(self, x):
        """(mean, inv_std) (C,) that x is normalised with: the batch's in training (and the
        running ones move towards them), else the running ones."""
        self.ops = ops_for(x)
        if self.training:
            mean, var = self.ops.channel_moments(x)
            m = x.size // x.shape[1]
            unbiased = var * (m / max(m - 1, 1))
            self.running_mean *= 1 - self.momentum
            self.running_mean += self.momentum * mean.astype(self.running_mean.dtype)
            self.running_var *= 1 - self.momentum
            self.running_var += self.momentum * unbiased.astype(self.running_var.dtype)
        else:
            mean, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
        return mean, 1 / get_array_module(x).sqrt(var + self.eps)

    def forward(self, x, gamma, beta):
        mean, self.inv_std = self.statistics(x)
        y, self.x_hat = self.ops.batch_norm(x, mean, self.inv_std, gamma, beta)
        self.gamma = gamma
        return y

    def backward(self, gy, needs):
        return self.ops.batch_norm_backward(gy, self.x_hat, self.inv_std, self.gamma,
                                            self.training, needs)


class BatchNormPoolFunction(BatchNormFunction):
    """maxpool(relu(batch_norm(x))) (or without the ReLU), windows that tile: one op, so that a
    backend may do it in one pass over memory (``ops.batch_norm_pool``)."""

    def __init__(self, running_mean, running_var, training: bool, momentum: float, eps: float,
                 window: tuple, relu: bool):
        super().__init__(running_mean, running_var, training, momentum, eps)
        self.window, self.relu = window, relu

    def forward(self, x, gamma, beta):
        mean, inv_std = self.statistics(x)
        y, self.saved = self.ops.batch_norm_pool(x, mean, inv_std, gamma, beta, self.window,
                                                 self.relu)
        return y

    def backward(self, gy, needs):
        return self.ops.batch_norm_pool_backward(gy, self.saved, self.training, needs)


def _checked_batch(x: Tensor, gamma: Tensor, training: bool, caller: str) -> None:
    if x.ndim < 2 or x.shape[1] != gamma.shape[0]:
        raise ValueError(f"{caller}: expected input (N, {gamma.shape[0]}, ...), "
                         f"got shape {tuple(x.shape)}")
    if training and x.size // x.shape[1] < 2:
        raise ValueError(f"{caller}: a batch of one value per channel has no variance to "
                         f"normalise by (shape {tuple(x.shape)}); use batches of 2 or "
                         "more, or evaluation mode")


def batch_norm(x: Tensor, gamma: Tensor, beta: Tensor, running_mean, running_var, training: bool,
               momentum: float = 0.1, eps: float = 1e-5, *, caller: str = "batch_norm") -> Tensor:
    """Batch normalisation of x (N, C, *S) with per-channel gamma and beta (C,); updates the running
    statistics (arrays (C,), in place) when ``training``."""
    x = as_tensor(x)
    _checked_batch(x, gamma, training, caller)
    return BatchNormFunction(running_mean, running_var, training, momentum,
                             eps).apply(x, gamma, beta)


def batch_norm_pool(x: Tensor, gamma: Tensor, beta: Tensor, running_mean, running_var,
                    training: bool, momentum: float, eps: float, window: tuple, relu: bool, *,
                    caller: str = "batch_norm_pool") -> Tensor:
    """maxpool(relu(batch_norm(x)), window), or without ``relu``: the same numbers as the three
    ops one after the other, with windows that tile x (N, C, *S) (stride = window)."""
    x = as_tensor(x)
    _checked_batch(x, gamma, training, caller)
    window = as_tuple(window, x.ndim - 2, f"{caller} window", minimum=1)
    if any(size < k for size, k in zip(x.shape[2:], window)):
        raise ValueError(f"{caller}: input spatial size {tuple(x.shape[2:])} is smaller "
                         f"than the window {window}")
    return BatchNormPoolFunction(running_mean, running_var, training, momentum, eps, window,
                                 relu).apply(x, gamma, beta)


class InstanceNormFunction(Function):
    def __init__(self, eps: float):
        self.eps = eps

    def forward(self, x):
        xp = get_array_module(x)
        axes = tuple(range(2, x.ndim))  # the positions of one example's channel
        self.m = math.prod(x.shape[2:])
        # (N, C, 1, ...)
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        self.inv_std = 1 / xp.sqrt(var + self.eps)
        self.x_hat = (x - mean) * self.inv_std
        return self.x_hat

    def backward(self, gy, needs):
        axes = tuple(range(2, gy.ndim))
        g_sum = gy.sum(axis=axes, keepdims=True)  # (N, C, 1, ...)
        g_dot = (gy * self.x_hat).sum(axis=axes, keepdims=True)
        return (self.inv_std / self.m * (self.m * gy - g_sum - self.x_hat * g_dot),)


def instance_norm(x: Tensor, eps: float = 1e-5, *, caller: str = "instance_norm") -> Tensor:
    """Each channel of each example of x (N, C, *S) rescaled
    to zero mean and unit variance over its positions."""
    x = as_tensor(x)
    if x.ndim < 3 or math.prod(x.shape[2:]) < 2:
        raise ValueError(f"{caller}: expected input (N, C, *S) with at least two positions per "
                         f"channel, got shape {tuple(x.shape)}")
    return InstanceNormFunction(eps).apply(x)


class AvgPoolFunction(Function):
    def __init__(self, window: tuple):
        self.window = window

    def forward(self, x):
        out = [size // k for size, k in zip(x.shape[2:], self.window)]
        self.x_shape, self.out = x.shape, out
        covered = tuple(slice(0, o * k) for o, k in zip(out, self.window))  # what the windows cover
        self.inside = (slice(None), slice(None)) + covered
        blocks = (x.shape[0],
                  x.shape[1]) + tuple(n for o, k in zip(out, self.window) for n in (o, k))
        # (N, C, O1 k1, O2 k2, ...) -> (N, C, O1, k1, O2, k2, ...): each window on axes of its own
        windows = x[self.inside].reshape(blocks)
        return windows.mean(axis=tuple(3 + 2 * i for i in range(len(out))))

    def backward(self, gy, needs):
        xp = get_array_module(gy)
        spread = (gy.shape[0], gy.shape[1]) + tuple(n for o in self.out for n in (o, 1))
        full = (gy.shape[0],
                gy.shape[1]) + tuple(n for o, k in zip(self.out, self.window) for n in (o, k))
        # (N, C, O1, O2, ...) -> (N, C, O1, 1, O2, 1, ...) ->
        # broadcast over each window -> (N, C, O1 k1, ...)
        each = xp.broadcast_to((gy / math.prod(self.window)).reshape(spread), full)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        gx[self.inside] = each.reshape(gx[self.inside].shape)
        return (gx,)


def grid_cells(sizes: tuple, grid: tuple) -> list[tuple]:
    """The slices of every cell of an adaptive pooling
    of ``sizes`` into ``grid``, in row-major order."""
    bounds = [[slice(i * n // k, -(-(i + 1) * n // k)) for i in range(k)]
              for n, k in zip(sizes, grid)]
    return list(itertools.product(*bounds))


class AdaptiveAvgPoolFunction(Function):
    def __init__(self, grid: tuple):
        self.grid = grid

    def forward(self, x):
        xp = get_array_module(x)
        self.x_shape = x.shape
        self.cells = grid_cells(x.shape[2:], self.grid)
        axes = tuple(range(2, x.ndim))
        # each (N, C)
        means = [x[(slice(None), slice(None)) + cell].mean(axis=axes) for cell in self.cells]
        # (N, C, cells) -> (N, C, *grid)
        return xp.stack(means, axis=-1).reshape(x.shape[:2] + self.grid)

    def backward(self, gy, needs):
        xp = get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        per_cell = gy.reshape(gy.shape[:2] + (-1,))  # (N, C, *grid) -> (N, C, cells)
        for i, cell in enumerate(self.cells):
            count = math.prod(s.stop - s.start for s in cell)
            # (N, C) -> (N, C, 1, ...): over the cell
            spread = (gy.shape[0], gy.shape[1]) + (1,) * len(cell)
            gx[(slice(None), slice(None)) + cell] += (per_cell[..., i] / count).reshape(spread)
        return (gx,)


def adaptive_avgpool(x: Tensor, grid: tuple, *, caller: str = "adaptive_avgpool") -> Tensor:
    """x (N, C, *S) averaged over a grid of ``grid``
    cells per spatial axis: (N, C, *grid), whatever S is."""
    x = as_tensor(x)
    if x.ndim != 2 + len(grid) or any(size < k for size, k in zip(x.shape[2:], grid)):
        raise ValueError(f"{caller}: expected input (N, C) and {len(grid)} spatial axes of at "
                         f"least {grid}, got shape {tuple(x.shape)}")
    return AdaptiveAvgPoolFunction(tuple(grid)).apply(x)


def avgpool(x: Tensor, window: tuple, *, caller: str = "avgpool") -> Tensor:
    """Mean of each window of x (N, C, *S); windows tile the input (stride = window)."""
    x = as_tensor(x)
    if x.ndim != 2 + len(window) or any(size < k for size, k in zip(x.shape[2:], window)):
        raise ValueError(f"{caller}: expected input (N, C) and {len(window)} spatial axes of at "
                         f"least {window}, got shape {tuple(x.shape)}")
    return AvgPoolFunction(tuple(window)).apply(x)
