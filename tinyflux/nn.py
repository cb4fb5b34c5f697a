"""Layers: a layer is its parameters plus a call, as in Flux.

``Conv``, ``MaxPool`` and ``Dense`` hold their weights as Tensors with
``requires_grad=True``; ``Chain`` calls its layers in order. Weights start
Glorot-uniform, biases at zero (Flux's defaults): a weight is drawn from
U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), which keeps the variance of
activations roughly constant from layer to layer. For a convolution,
fan_in = C * prod(K) and fan_out = O * prod(K).

``print(model)`` mirrors the constructor and counts parameters, like Flux;
``model.summary((1, 28, 28))`` also runs one zero input through the layers
and lists the shape each layer gives, like Keras's ``model.summary()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import functional as F
from .backends import get_array_module
from .checks import as_tuple, integer
from .modes import no_grad
from .tensor import Tensor, as_tensor

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
    """Base class: finds parameters among attributes, in the order they were assigned."""

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for name, value in vars(self).items():
            if isinstance(value, Tensor) and value.requires_grad:
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_parameters(f"{prefix}{name}.{i}.")

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
        """Each layer with the shape of its output for inputs of shape (N, *input_shape), and its parameters.

        ``input_shape`` leaves out the batch size N: (1, 28, 28) for one-channel
        28x28 images, (1, 16, 32, 32) for one-channel clips of 16 frames. One
        all-zero example goes through the layers (without recording a graph),
        so a shape the model cannot take fails here with the layer's own error.
        """
        input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        if not input_shape or not all(isinstance(n, int) and n >= 1 for n in input_shape):
            raise ValueError(f"summary: input_shape must be positive sizes without the batch, e.g. (1, 28, 28); "
                             f"got {input_shape}")
        parameters = self.parameters()
        like = parameters[0].data if parameters else np.zeros(0, np.float32)  # zeros where and as the weights are
        rows: list[tuple[str, tuple, int]] = []
        with no_grad():
            self._summarize(Tensor(get_array_module(like).zeros((1,) + input_shape, dtype=like.dtype)), rows, "")
        return Summary(input_shape, rows, len(parameters), self.num_parameters())

    def _summarize(self, x: Tensor, rows: list, indent: str) -> Tensor:
        y = self(x)
        rows.append((indent + self.signature(), tuple(y.shape[1:]), self.num_parameters()))
        return y

    def __repr__(self) -> str:
        n = self.num_parameters()
        return self.signature() + (f"  # {_count(n)} parameters" if n else "")


def _checked_activation(activation, layer: str):
    """None or a function of one Tensor; a layer given, say, a number by mistake fails here, not in forward."""
    if activation is not None and not callable(activation):
        raise TypeError(f"{layer}: activation must be a function such as tf.relu, or None; got {activation!r}")
    return activation


def _activation_name(activation: Callable | None) -> str:
    return "" if activation is None else ", " + getattr(activation, "__name__", repr(activation))


class Conv(Module):
    """Conv(kernel, in_channels, out_channels, activation=None, *, stride=1, pad=0)

    ``y = activation(conv(x, weight) + bias)`` with weight (out, in, *kernel) and bias (out,).
    The length of ``kernel`` gives the dimension: (3,) for sequences, (3, 3) for
    images (N, C, H, W), (3, 3, 3) for videos (N, C, T, H, W).

    >>> Conv((3, 3), 1, 16, F.relu, pad=1)
    Conv((3, 3), 1 => 16, relu, pad=1)  # 160 parameters
    """

    def __init__(self, kernel: tuple, in_channels: int, out_channels: int, activation: Callable | None = None,
                 *, stride=1, pad=0):
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
        self.weight = Tensor(glorot_uniform((self.out_channels, self.in_channels) + self.kernel,
                                            self.in_channels * k, self.out_channels * k), requires_grad=True)
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
        """Same result as ``pool(self(x))``, cheaper, by the ``plan`` that :func:`pooling_plan` chose."""
        if plan == "one op":
            y = F.conv_maxpool(x, self.weight, self.pad, pool.window, caller=self.signature())
        else:  # "pool first"
            y = pool(F.conv(x, self.weight, None, self.stride, self.pad, caller=self.signature()))
        if self.activation is F.relu:
            return F.bias_relu(y, self.bias)  # relu(y + bias) as one op
        return y + self.bias.reshape((1, -1) + (1,) * len(self.kernel))  # (O,) -> (1, O, 1, 1): one bias per channel


def pooling_plan(layer, following) -> str | None:
    """How ``Chain`` runs ``layer`` followed by ``following``: the one rule for merging a convolution with its pooling.

    - ``"one op"``: a stride-1 ``Conv`` whose ``MaxPool`` windows tile its output (stride = window):
      ``F.conv_maxpool``, which never writes the full-size convolution output;
    - ``"pool first"``: any other ``Conv`` then ``MaxPool``: ``activation(pool(conv(x)) + bias)``;
    - None: each layer on its own.

    Both plans need a non-decreasing activation (or none): taking a maximum commutes with adding the
    same number to every value (the bias is one number per channel) and with any non-decreasing
    function, max(relu(a), relu(b)) = relu(max(a, b)). Pooling first does the bias and ReLU work on a
    quarter of the values (for 2x2 windows).
    """
    if not (isinstance(layer, Conv) and isinstance(following, MaxPool)):
        return None
    if layer.activation not in _MONOTONE or len(following.window) != len(layer.kernel):
        return None
    if all(s == 1 for s in layer.stride) and following.stride == following.window:
        return "one op"
    return "pool first"


class MaxPool(Module):
    """MaxPool(window, stride=None): the largest value in each window; stride defaults to the window.

    >>> MaxPool((2, 2))
    MaxPool((2, 2))
    """

    def __init__(self, window: tuple, stride=None):
        d = len(window) if isinstance(window, (tuple, list)) else 1
        if d not in (1, 2, 3):
            raise ValueError(f"MaxPool: window must have 1, 2 or 3 sizes, got {window}")
        self.window = as_tuple(window, d, "MaxPool window", minimum=1)
        self.stride = self.window if stride is None else as_tuple(stride, len(self.window), "MaxPool stride", minimum=1)

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
            raise ValueError(f"GlobalMeanPool(): expected input (N, C, *S) with at least one spatial axis, "
                             f"got shape {tuple(x.shape)}")
        return x.mean(axis=tuple(range(2, x.ndim)))  # (N, C, *S) -> (N, C)


class FrameFeatures(Module):
    """FrameFeatures(image_model, mean=None, std=None): a frozen image network applied to every frame of a clip,
    its features averaged over time: (N, C, T, H, W) -> (N, F).

    For a small video data set, a network trained on millions of images (brought in with
    ``tf.onnx.load``) already knows edges, textures and objects; only a small head on its
    features is trained. ``image_model`` maps (B, C, H, W) to (B, F); it is frozen: it has no
    parameters as far as the optimizer and the checkpoints are concerned, and runs without a
    graph. ``mean`` and ``std`` (one number per channel) normalise the frames first, as the
    network was trained (ImageNet: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
    """

    def __init__(self, image_model, mean=None, std=None):
        self.image_model = image_model
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(1, -1, 1, 1)

    def named_parameters(self, prefix: str = ""):
        return iter(())  # frozen: nothing for the optimizer or the checkpoints

    def signature(self) -> str:
        return f"FrameFeatures({type(self.image_model).__name__}, frozen)"

    def forward(self, x: Tensor) -> Tensor:
        clips = as_tensor(x).data
        if clips.ndim != 5:
            raise ValueError(f"{self.signature()}: expected clips (N, C, T, H, W), got shape {tuple(clips.shape)}")
        n, c, t, h, w = clips.shape
        xp = get_array_module(clips)
        frames = clips.transpose(0, 2, 1, 3, 4).reshape(n * t, c, h, w)  # (N, C, T, H, W) -> (N T, C, H, W)
        if self.mean is not None:
            frames = (frames - xp.asarray(self.mean)) / xp.asarray(self.std)
        with no_grad():
            features = self.image_model(Tensor(frames)).data  # (N T, F)
        return Tensor(features.reshape(n, t, -1).mean(axis=1))  # (N T, F) -> (N, T, F) -> (N, F)


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
        return f"Dense({self.in_features} => {self.out_features}{_activation_name(self.activation)})"

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias, caller=self.signature())
        return y if self.activation is None else self.activation(y)


class Chain(Module):
    """Chain(*layers): calls each layer (or plain function, like ``flatten``) on the previous result."""

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Chain: layer {i} is not callable: {layer!r}")
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        layers, i = self.layers, 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            plan = pooling_plan(layer, following)
            if plan:
                x = layer.forward_pooled(as_tensor(x), following, plan)  # a speed-up only
                i += 2
            else:
                x = layer(x)
                i += 1
        return x

    def named_parameters(self, prefix: str = ""):
        """Names like PyTorch's Sequential: "0.weight", "0.bias", "2.weight", ... (index in the chain)."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Module):
                yield from layer.named_parameters(f"{prefix}{i}.")

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def signature(self) -> str:
        return "Chain(...)"

    def _summarize(self, x: Tensor, rows: list, indent: str) -> Tensor:
        rows.append((indent + "Chain(", (), 0))  # a heading row, no shape
        for layer in self.layers:
            if isinstance(layer, Module):
                x = layer._summarize(x, rows, indent + "  ")
            else:  # a plain function such as flatten
                x = layer(x)
                rows.append((indent + "  " + getattr(layer, "__name__", repr(layer)), tuple(x.shape[1:]), 0))
        rows.append((indent + ")", (), 0))
        return x

    def __repr__(self) -> str:
        lines = []
        for layer in self.layers:
            if isinstance(layer, Module):
                text = layer.signature() if not isinstance(layer, Chain) else repr(layer).replace("\n", "\n  ")
                count = layer.num_parameters()
                lines.append((text + ",", f"# {_count(count)} parameters" if count and not isinstance(layer, Chain)
                              else ""))
            else:
                lines.append((getattr(layer, "__name__", repr(layer)) + ",", ""))
        width = max(len(text) for text, _ in lines) if lines else 0
        body = "\n".join(f"  {text:<{width}}  {comment}".rstrip() for text, comment in lines)
        params = self.parameters()
        total = f"# Total: {len(params)} arrays, {_count(self.num_parameters())} parameters"
        return f"Chain(\n{body}\n)  {total}"


@dataclass
class Summary:
    """What :meth:`Module.summary` found; shows itself as a table.

    >>> Chain(Dense(4, 3, F.relu), Dense(3, 2)).summary(4)
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
        table += [(name, shape(dims), _count(count) if count else "") for name, dims, count in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(2)]
        lines = [f"{name:<{widths[0]}}  {dims:<{widths[1]}}  {count:>10}".rstrip() for name, dims, count in table]
        return "\n".join(lines + [f"Total: {self.arrays} arrays, {_count(self.parameters)} parameters"])

    __str__ = __repr__


def _short(values: tuple):
    """(1, 1) -> 1 for a compact repr; unequal values stay a tuple."""
    return values[0] if len(set(values)) == 1 else values


flatten = F.flatten
_MONOTONE = (None, F.relu)  # activations that commute with max-pooling
