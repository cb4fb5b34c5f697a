"""The layers of the model-zoo network and their neighbours:
Conv, MaxPool, Dense, GlobalMeanPool, FrameFeatures.

``Conv``, ``MaxPool`` and ``Dense`` hold their weights as Tensors with
``requires_grad=True``; :func:`pooling_plan` is the one rule by which ``Chain``
runs a convolution (or a batch normalisation) and the max-pooling after it as
one op. It decides only whether the math allows it; how the op is computed is
each backend's choice, made inside its ``ops.conv_pool`` (or
``ops.batch_norm_pool``; ``tinyflux/backends/numpy_ops.py``).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .. import functional as F
from ..checks import as_tuple, integer
from ..tensor import Tensor, as_tensor
from .module import Module, _activation_name, _checked_activation, _short, glorot_uniform
from .normalization import BatchNorm


class Conv(Module):
    """Conv(kernel, in_channels, out_channels, activation=None, *, stride=1, pad=0)

    ``y = activation(conv(x, weight) + bias)`` with weight (out, in, *kernel) and bias (out,).
    The length of ``kernel`` gives the dimension: (3,) for sequences, (3, 3) for
    images (N, C, H, W), (3, 3, 3) for videos (N, C, T, H, W).

    >>> Conv((3, 3), 1, 16, F.relu, pad=1)
    Conv((3, 3), 1 => 16, relu, pad=1)  # 160 parameters
    """

    def __init__(self, kernel: tuple, in_channels: int, out_channels: int,
                 activation: Callable | None = None, *, stride=1, pad=0):
        d = len(kernel) if isinstance(kernel, (tuple, list)) else 1
        if d not in (1, 2, 3):
            raise ValueError(f"Conv: kernel must have 1, 2 or 3 sizes, got {kernel}")
        self.kernel = as_tuple(kernel, d, "Conv kernel", minimum=1)
        self.stride = as_tuple(stride, d, "Conv stride", minimum=1)
        self.pad = as_tuple(pad, d, "Conv pad")
        self.in_channels = integer(in_channels, "Conv in_channels", minimum=1)
        self.out_channels = integer(out_channels, "Conv out_channels", minimum=1)
        self.activation = _checked_activation(activation, "Conv")
        k = math.prod(self.kernel)
        shape = (self.out_channels, self.in_channels) + self.kernel
        self.weight = Tensor(glorot_uniform(shape, self.in_channels * k, self.out_channels * k),
                             requires_grad=True)
        self.bias = Tensor(np.zeros(self.out_channels, dtype=np.float32), requires_grad=True)

    def signature(self) -> str:
        options = ""
        if any(s != 1 for s in self.stride):
            options += f", stride={_short(self.stride)}"
        if any(self.pad):
            options += f", pad={_short(self.pad)}"
        return (f"Conv({self.kernel}, {self.in_channels} => {self.out_channels}"
                f"{_activation_name(self.activation)}{options})")

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv(x, self.weight, self.bias, self.stride, self.pad, caller=self.signature())
        return y if self.activation is None else self.activation(y)

    def forward_pooled(self, x: Tensor, pool: "MaxPool", plan: str) -> Tensor:
        """Same result as ``pool(self(x))``, cheaper, by
        the ``plan`` that :func:`pooling_plan` chose."""
        if plan == "one op" and self.activation is F.relu:  # the bias and ReLU inside the op
            return F.conv_maxpool(x, self.weight, self.pad, pool.window, bias_relu=self.bias,
                                  caller=self.signature())
        if plan == "one op":
            y = F.conv_maxpool(x, self.weight, self.pad, pool.window, caller=self.signature())
        else:  # "pool first"
            y = pool(F.conv(x, self.weight, None, self.stride, self.pad, caller=self.signature()))
        if self.activation is F.relu:
            return F.bias_relu(y, self.bias)  # relu(y + bias) as one op
        # (O,) -> (1, O, 1, 1): one bias per channel
        return y + self.bias.reshape((1, -1) + (1,) * len(self.kernel))


def pooling_plan(layer, following) -> str | None:
    """How ``Chain`` runs ``layer`` followed by ``following``: the one rule for merging a
    convolution, or a batch normalisation, with the max-pooling after it.

    - ``"one op"``: a stride-1 ``Conv`` whose ``MaxPool`` windows tile its output (stride = window):
      ``F.conv_maxpool``, which never writes the full-size convolution output; or a ``BatchNorm``
      with ReLU (or none) and windows that tile: ``F.batch_norm_pool``, the same numbers in one op;
    - ``"pool first"``: any other ``Conv`` then ``MaxPool``: ``activation(pool(conv(x)) + bias)``;
    - None: each layer on its own.

    Both plans need a non-decreasing activation (or none): taking a maximum commutes
    with adding the same number to every value (the bias is one number per channel) and
    with any non-decreasing function, max(relu(a), relu(b)) = relu(max(a, b)). Pooling
    first does the bias and ReLU work on a quarter of the values (for 2x2 windows). Batch
    normalisation is never pooled first: its scale gamma may be negative."""
    if isinstance(layer, BatchNorm) and isinstance(following, MaxPool):
        tiled = following.stride == following.window
        computed = (None, F.relu)  # the activations the op computes
        return "one op" if tiled and layer.activation in computed else None
    if not (isinstance(layer, Conv) and isinstance(following, MaxPool)):
        return None
    if layer.activation not in _MONOTONE or len(following.window) != len(layer.kernel):
        return None
    if all(s == 1 for s in layer.stride) and following.stride == following.window:
        return "one op"
    return "pool first"


class MaxPool(Module):
    """MaxPool(window, stride=None): the largest value
    in each window; stride defaults to the window.

    >>> MaxPool((2, 2))
    MaxPool((2, 2))
    """

    def __init__(self, window: tuple, stride=None):
        d = len(window) if isinstance(window, (tuple, list)) else 1
        if d not in (1, 2, 3):
            raise ValueError(f"MaxPool: window must have 1, 2 or 3 sizes, got {window}")
        self.window = as_tuple(window, d, "MaxPool window", minimum=1)
        self.stride = (self.window if stride is None
                       else as_tuple(stride, len(self.window), "MaxPool stride", minimum=1))

    def signature(self) -> str:
        stride = "" if self.stride == self.window else f", stride={_short(self.stride)}"
        return f"MaxPool({self.window}{stride})"

    def forward(self, x: Tensor) -> Tensor:
        return F.maxpool(x, self.window, self.stride, caller=self.signature())


class GlobalMeanPool(Module):
    """GlobalMeanPool(): the mean of each channel over all its positions, (N, C, *S) -> (N, C).

    After it a network no longer depends on the size of its input (any image size, any clip
    length), and it needs no ``flatten``. Flux's ``GlobalMeanPool`` keeps size-1 axes, (N, C, 1, 1);
    this one drops them, as the dense layer that follows wants.

    >>> GlobalMeanPool()(Tensor(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))).data
    array([[1.5, 5.5]], dtype=float32)
    """

    def signature(self) -> str:
        return "GlobalMeanPool()"

    def forward(self, x: Tensor) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 3:
            raise ValueError("GlobalMeanPool(): expected input (N, C, *S) with at least one "
                             f"spatial axis, got shape {tuple(x.shape)}")
        return x.mean(axis=tuple(range(2, x.ndim)))  # (N, C, *S) -> (N, C)


class Dense(Module):
    """Dense(in, out, activation=None): ``y = activation(x @ weight.T + bias)``, weight (out, in).

    >>> Dense(288, 10)
    Dense(288 => 10)  # 2_890 parameters
    """

    def __init__(self, in_features: int, out_features: int, activation: Callable | None = None):
        self.in_features = integer(in_features, "Dense in_features", minimum=1)
        self.out_features = integer(out_features, "Dense out_features", minimum=1)
        self.activation = _checked_activation(activation, "Dense")
        self.weight = Tensor(glorot_uniform((self.out_features, self.in_features), self.in_features,
                                            self.out_features), requires_grad=True)
        self.bias = Tensor(np.zeros(self.out_features, dtype=np.float32), requires_grad=True)

    def signature(self) -> str:
        activation = _activation_name(self.activation)
        return f"Dense({self.in_features} => {self.out_features}{activation})"

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias, caller=self.signature())
        return y if self.activation is None else self.activation(y)


_MONOTONE = (None, F.relu)  # activations that commute with max-pooling
