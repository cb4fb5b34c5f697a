"""The base of every layer: parameters found among
attributes, buffers, training and evaluation modes, Chain.

A layer is its parameters plus a call, as in Flux. Weights start Glorot-uniform,
biases at zero (Flux's defaults): a weight is drawn from U(-a, a) with
a = sqrt(6 / (fan_in + fan_out)), which keeps the variance of activations
roughly constant from layer to layer. For a convolution, fan_in = C * prod(K)
and fan_out = O * prod(K).

``print(model)`` mirrors the constructor and counts parameters, like Flux;
``model.summary((1, 28, 28))`` also runs one zero input through the layers
and lists the shape each layer gives, like Keras's ``model.summary()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..backends import get_array_module
from ..modes import no_grad
from ..tensor import Tensor, as_tensor

_rng = np.random.default_rng()


def seed(value: int) -> None:
    """Make weight initialisation repeatable: ``tf.seed(0)`` before building a model."""
    global _rng
    _rng = np.random.default_rng(value)


def glorot_uniform(shape: tuple, fan_in: int, fan_out: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return _rng.uniform(-limit, limit, size=shape).astype(np.float32)


def _count(n: int) -> str:
    return f"{n:_}"  # 16938 -> 16_938, as Flux prints it


class Module:
    """Base class: finds parameters, buffers and sub-layers
    among attributes, in the order they were assigned.

    *Parameters* are the Tensors with ``requires_grad`` that the optimizer trains. *Buffers* are
    the Tensors without it that a layer keeps from batch to batch and a checkpoint must hold
    (BatchNorm's running statistics, Dropout's count of masks drawn). A model is in *training*
    mode or in *evaluation* mode: ``model.train()`` and ``model.eval()`` set every layer's
    ``training`` (BatchNorm then uses its batch's statistics or its running ones, Dropout drops or
    passes everything). The names are PyTorch's, which Python users know; Flux's are
    ``trainmode!`` and ``testmode!``. ``tf.train`` evaluates and predicts in evaluation mode.
    """

    training = True  # the default of every layer; train() and eval() set it on the instance

    def _members(self, prefix: str):
        """(name, value) of every attribute, and of every
        item of a list or tuple attribute ("layers.0")."""
        for name, value in vars(self).items():
            if isinstance(value, (list, tuple)):
                yield from ((f"{prefix}{name}.{i}", item) for i, item in enumerate(value))
            else:
                yield prefix + name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for name, value in self._members(prefix):
            if isinstance(value, Tensor) and value.requires_grad:
                yield name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(name + ".")

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """The buffers, named like the parameters ("1.running_mean")."""
        for name, value in self._members(prefix):
            if isinstance(value, Tensor) and not value.requires_grad:
                yield name, value
            elif isinstance(value, Module):
                yield from value.named_buffers(name + ".")

    def children(self) -> list["Module"]:
        return [value for _, value in self._members("") if isinstance(value, Module)]

    def train(self, mode: bool = True) -> "Module":
        """Training mode (or evaluation mode with
        ``mode=False``) for this layer and every layer in it."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: running statistics, no dropout. Returns the model."""
        return self.train(False)

    def parameters(self) -> list[Tensor]:
        """The parameter Tensors, layer by layer (weight before bias)."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def __call__(self, x):
        return self.forward(as_tensor(x))

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def signature(self) -> str:
        """The constructor call that builds this layer, e.g. ``Dense(288 => 10)``."""
        return type(self).__name__ + "()"

    def summary(self, input_shape) -> "Summary":
        """Each layer with the shape of its output for inputs
        of shape (N, *input_shape), and its parameters.

        ``input_shape`` leaves out the batch size N: (1, 28, 28) for one-channel
        28x28 images, (1, 16, 32, 32) for one-channel clips of 16 frames. One
        all-zero example goes through the layers (without recording a graph),
        so a shape the model cannot take fails here with the layer's own error.
        """
        input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        if not input_shape or not all(isinstance(n, int) and n >= 1 for n in input_shape):
            raise ValueError("summary: input_shape must be positive sizes without the batch, "
                             f"e.g. (1, 28, 28); got {input_shape}")
        parameters = self.parameters()
        # zeros where and as the weights are
        like = parameters[0].data if parameters else np.zeros(0, np.float32)
        rows: list[tuple[str, tuple, int]] = []
        with no_grad():
            example = Tensor(get_array_module(like).zeros((1,) + input_shape, dtype=like.dtype))
            self._summarize(example, rows, "")
        return Summary(input_shape, rows, len(parameters), self.num_parameters())

    def _summarize(self, x: Tensor, rows: list, indent: str) -> Tensor:
        y = self(x)
        rows.append((indent + self.signature(), tuple(y.shape[1:]), self.num_parameters()))
        return y

    def __repr__(self) -> str:
        n = self.num_parameters()
        return self.signature() + (f"  # {_count(n)} parameters" if n else "")


def _checked_activation(activation, layer: str):
    """None or a function of one Tensor; a layer given,
    say, a number by mistake fails here, not in forward."""
    if activation is not None and not callable(activation):
        raise TypeError(f"{layer}: activation must be a function such as tf.relu, or "
                        f"None; got {activation!r}")
    return activation


def _activation_name(activation: Callable | None) -> str:
    return "" if activation is None else ", " + getattr(activation, "__name__", repr(activation))


@dataclass
class Summary:
    """What :meth:`Module.summary` found; shows itself as a table.

    >>> from tinyflux.nn import Chain, Dense
    >>> import tinyflux as tf
    >>> Chain(Dense(4, 3, tf.relu), Dense(3, 2)).summary(4)
    Layer                  Output shape  Parameters
    input                  (N, 4)
    Chain(
      Dense(4 => 3, relu)  (N, 3)                15
      Dense(3 => 2)        (N, 2)                 8
    )
    Total: 4 arrays, 23 parameters
    """

    input_shape: tuple
    rows: list  # (layer, output shape without N, number of parameters), in the order data flows
    arrays: int  # parameter arrays (weights and biases)
    parameters: int  # numbers in them

    def __repr__(self) -> str:
        def shape(dims: tuple) -> str:
            return "(" + ", ".join(["N"] + [str(d) for d in dims]) + ")" if dims else ""

        table = [("Layer", "Output shape", "Parameters"), ("input", shape(self.input_shape), "")]
        table += [(name, shape(dims), _count(count) if count else "")
                  for name, dims, count in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        lines = [f"{name:<{widths[0]}}  {dims:<{widths[1]}}  {count:>10}".rstrip()
                 for name, dims, count in table]
        return "\n".join(lines + [f"Total: {self.arrays} arrays, "
                                  f"{_count(self.parameters)} parameters"])

    __str__ = __repr__


def _short(values: tuple):
    """(1, 1) -> 1 for a compact repr; unequal values stay a tuple."""
    return values[0] if len(set(values)) == 1 else values
