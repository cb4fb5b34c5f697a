"""Optimizers: they read each parameter's ``.grad`` and update its ``.data`` in place.

SGD: p <- p - lr * g (with momentum mu: u <- mu * u + g; p <- p - lr * u).

Adam keeps two running averages per parameter, of the gradient and of its
square, and divides one by the square root of the other, so every weight
takes steps of roughly size lr whatever the scale of its gradient:

    m <- b1 * m + (1 - b1) * g           v <- b2 * v + (1 - b2) * g**2
    p <- p - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1**t),  v_hat = v / (1 - b2**t)

m and v start at zero, so early averages are too small; dividing by
(1 - b**t) after t steps corrects that bias (Kingma & Ba, 2015; the same
update as PyTorch's and Flux's Adam). ``opt.lr`` may be changed between steps.
"""
from __future__ import annotations

import math

from . import backend
from .tensor import Tensor


class Optimizer:
    def __init__(self, params, lr: float):
        self.params: list[Tensor] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, expected a Tensor")
        self.lr = lr
        self.t = 0  # number of steps taken

    def zero_grad(self) -> None:
        """Forget the gradients, ready for the next backward pass."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.t += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(i, p)

    def update(self, i: int, p: Tensor) -> None:
        raise NotImplementedError

    # -- checkpointing: arrays and plain numbers only ---------------------------
    def state_arrays(self) -> dict[str, list]:
        """Per-parameter state arrays by kind, e.g. {"m": [...], "v": [...]}."""
        return {}

    def hyperparameters(self) -> dict:
        return {"type": type(self).__name__, "lr": self.lr, "t": self.t}

    def load_state(self, hyper: dict, arrays: dict[str, list]) -> None:
        self.lr, self.t = float(hyper["lr"]), int(hyper["t"])
        for kind, values in arrays.items():
            target = getattr(self, kind)
            for i, value in enumerate(values):
                if value is not None:
                    xp = backend.get_array_module(self.params[i].data)
                    target[i] = xp.asarray(value)


class SGD(Optimizer):
    """SGD(params, lr=0.01, momentum=0.0)"""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = momentum
        self.velocity = [backend.get_array_module(p.data).zeros_like(p.data) for p in self.params] if momentum else []

    def update(self, i, p):
        g = p.grad
        if self.momentum:
            u = self.velocity[i]
            u *= self.momentum
            u += g
            g = u
        p.data -= self.lr * g

    def state_arrays(self):
        return {"velocity": self.velocity} if self.momentum else {}


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)"""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.betas, self.eps = tuple(betas), eps
        xp = [backend.get_array_module(p.data) for p in self.params]
        self.m = [x.zeros_like(p.data) for x, p in zip(xp, self.params)]
        self.v = [x.zeros_like(p.data) for x, p in zip(xp, self.params)]

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bias1, bias2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        # Fold both bias corrections into two scalars: lr * m_hat / (sqrt(v_hat) + eps)
        # = step_size * m / (sqrt(v) + eps_scaled), which saves two passes over each array.
        self._step_size = self.lr * math.sqrt(bias2) / bias1
        self._eps_scaled = self.eps * math.sqrt(bias2)
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(i, p)

    def update(self, i, p):
        b1, b2 = self.betas
        g, m, v = p.grad, self.m[i], self.v[i]
        cuda = backend.cuda_kernels(g)
        if cuda is not None:  # the same three lines below as one launch instead of about ten
            cuda.adam_update(p.data, g, m, v, self._step_size, self._eps_scaled, b1, b2)
            return
        xp = backend.get_array_module(g)
        m += (1 - b1) * (g - m)  # same as m = b1*m + (1-b1)*g, in place
        v += (1 - b2) * (g * g - v)
        denom = xp.sqrt(v)
        denom += self._eps_scaled
        p.data -= self._step_size * m / denom

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta1": self.betas[0], "beta2": self.betas[1], "eps": self.eps}

    def state_arrays(self):
        return {"m": self.m, "v": self.v}
