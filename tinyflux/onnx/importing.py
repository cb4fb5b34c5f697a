"""tf.onnx.load's table: each ONNX operation tinyflux reads, with what it refuses, its layer in an
``nn.Chain``, and its work in a :class:`Graph` (a graph with branches, run node by node)."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from .. import functional as F
from .. import nn
from ..tensor import Tensor, as_tensor

# Today's PyTorch exporter (dynamo, opset 18 and up) writes AdaptiveAvgPool
# as ReduceMean, whose axes are then an input, and Flatten as Reshape to a
# shape given as an input: such graphs are read as a Graph, node by node.


class OnnxImportError(ValueError):
    """The ONNX file holds something tinyflux cannot represent; the message names the node."""


def _attributes(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class NodeForm(NamedTuple):
    """How one ONNX operation is read: one row of :data:`IMPORTS`.

    ``refuse(node, attributes, weights)``: the reason a variant tinyflux does not have
    is refused, or None. ``layer(params, attributes, layers, following)``: its layer in
    an ``nn.Chain`` (params: its weights in the order of its inputs; layers: the chain
    so far; following: the next node's (op, attributes) or None), or PASS when it adds
    no layer, or None when only a :class:`Graph` can run it. ``run(args, attributes)``:
    its work in a Graph, with tinyflux's functions (args: its inputs' values)."""

    refuse: Callable
    layer: Callable
    run: Callable


# a node that adds no layer to the chain: Dropout, Identity, a Relu taken into the layer before
PASS = "pass"


def _no_variants(node, attributes, weights):
    return None


def _refuse_window(node, attributes, weights):
    """Conv and MaxPool: explicit pads, the same on
    both sides; no dilations, groups or ceil_mode."""
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "uses auto_pad; only explicit pads are supported"
    pads = list(attributes.get("pads", []))
    if pads[:len(pads) // 2] != pads[len(pads) // 2:]:
        return f"pads its two sides differently ({pads})"
    if any(d != 1 for d in attributes.get("dilations", [])) or attributes.get("group", 1) != 1 or \
            attributes.get("ceil_mode", 0):
        return "uses dilations, groups or ceil_mode, which tinyflux does not have"
    return None


def _refuse_gemm(node, attributes, weights):
    if attributes.get("transA",
                      0) or attributes.get("alpha",
                                           1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
        return "has transA, alpha or beta, which Dense does not"
    return None


def _refuse_average_pool(node, attributes, weights):
    tiles = list(attributes.get("strides", [])) == list(attributes["kernel_shape"])
    if not tiles or any(attributes.get("pads", [])) or attributes.get("ceil_mode", 0):
        return ("is not made of windows that tile the input (strides = kernel, no pads), the only "
                "average pooling tinyflux has")
    return None


def _refuse_batch_norm(node, attributes, weights):
    if attributes.get("training_mode", 0):
        return ("has training_mode=1 (batch statistics at inference); tinyflux imports models for "
                "inference, with the running statistics")
    return None


def _refuse_dropout(node, attributes, weights):
    # training_mode given, and true or not a constant
    training = len(node.input) > 2 and node.input[2] and bool(
        np.asarray(weights.get(node.input[2], True)).any())
    if attributes.get("is_test", 1) == 0 or training:  # before opset 7: is_test=0 trains
        return ("drops at random (training_mode true, or not a constant); tinyflux imports models "
                "for inference, where Dropout passes its input on")
    return None


def _check_node(node, attributes: dict, weights: dict) -> None:
    """Refuse operations, and variants of supported
    ones, that tinyflux does not have, naming the node."""
    where = f"{node.op_type} node {node.name or '(unnamed)'}"
    if node.op_type not in IMPORTS:
        raise OnnxImportError(f"onnx.load: the {where} has no tinyflux form; "
                              f"supported: {', '.join(SUPPORTED)}")
    reason = IMPORTS[node.op_type].refuse(node, attributes, weights)
    if reason:
        raise OnnxImportError(f"onnx.load: the {where} {reason}")


def _optional(params: list, index: int):
    return params[index] if len(params) > index else None


def _conv_layer(params, attributes, layers, following) -> nn.Conv:
    weight, bias = params[0], _optional(params, 1)
    kernel = tuple(int(k) for k in weight.shape[2:])
    layer = nn.Conv(kernel, int(weight.shape[1]), int(weight.shape[0]),
                    stride=tuple(attributes.get("strides", [1] * len(kernel))),
                    pad=tuple(attributes.get("pads", [0] * 2 * len(kernel))[:len(kernel)]))
    layer.weight.data = weight.astype(np.float32)
    layer.bias.data = (np.zeros(weight.shape[0]) if bias is None else bias).astype(np.float32)
    return layer


def _dense_layer(params, attributes, layers, following) -> nn.Dense:
    weight, bias = params[0], _optional(params, 1)
    # Dense keeps (out, in), as Gemm with transB=1
    weight = weight if attributes.get("transB", 0) else weight.T
    layer = nn.Dense(int(weight.shape[1]), int(weight.shape[0]))
    layer.weight.data = np.ascontiguousarray(weight, dtype=np.float32)
    layer.bias.data = (np.zeros(weight.shape[0]) if bias is None else bias).astype(np.float32)
    return layer


def _batch_norm_layer(params, attributes, layers, following) -> nn.BatchNorm:
    scale, offset, mean, variance = params[:4]
    layer = nn.BatchNorm(len(scale), eps=attributes.get("epsilon", 1e-5))
    for tensor, array in ((layer.weight, scale), (layer.bias, offset), (layer.running_mean, mean),
                          (layer.running_var, variance)):
        tensor.data = np.asarray(array, np.float32)
    return layer


def _instance_norm_layer(params, attributes, layers, following):
    if not (np.all(params[0] == 1) and np.all(params[1] == 0)):
        return None  # a learned scale or bias: the Graph computes it
    return nn.InstanceNorm(len(params[0]), eps=attributes.get("epsilon", 1e-5))


def _relu_layer(params, attributes, layers, following):
    last = layers[-1] if layers else None
    if isinstance(last, (nn.Conv, nn.Dense, nn.BatchNorm)) and last.activation is None:
        last.activation = F.relu  # Conv followed by Relu becomes one Conv(..., relu)
        return PASS
    return F.relu


def _max_pool_layer(params, attributes, layers, following):
    if any(attributes.get("pads", [])):  # nn.MaxPool does not pad: the Graph does it with a pad op
        return None
    window = tuple(attributes["kernel_shape"])
    # ONNX's default stride: 1
    return nn.MaxPool(window, tuple(attributes.get("strides", [1] * len(window))))


def _axis_one(function):
    """The chain layer of Flatten, Softmax or LogSoftmax: along axis 1 only (-1 is the last axis,
    axis 1 only for 2-D values); another axis is left to the Graph, which follows shapes."""
    def layer(params, attributes, layers, following):
        return function if attributes["axis"] == 1 else None
    return layer


def _global_mean_layer(params, attributes, layers, following):
    if not (following and following[0] == "Flatten" and following[1]["axis"] == 1):
        return None  # GlobalMeanPool drops the axes of size 1 that ONNX keeps: the Graph keeps them
    return nn.GlobalMeanPool()  # and the Flatten after it goes (see as_chain)


def _average_pool_layer(params, attributes, layers, following):
    return nn.AvgPool(tuple(attributes["kernel_shape"]))


def _run_global_mean(args, attributes):
    return args[0].mean(axis=tuple(range(2, args[0].ndim)), keepdims=True)


def _graph_only(params, attributes, layers, following):
    return None


def _passed_on(params, attributes, layers, following):
    return PASS


def _run_conv(args, attributes):
    x, d = args[0], args[0].ndim - 2
    return F.conv(x, args[1], _optional(args, 2), tuple(attributes.get("strides", [1] * d)),
                  tuple(attributes.get("pads", [0] * 2 * d)[:d]))


def _run_gemm(args, attributes):
    weight = args[1] if attributes.get("transB", 0) else args[1].T  # (out, in) for linear
    return F.linear(args[0], weight, _optional(args, 2))


def _run_max_pool(args, attributes):
    x, pads = args[0], list(attributes.get("pads", []))
    if any(pads):  # padded with -inf, so that a pad never wins a window
        x = F.pad(x, pads[:len(pads) // 2], pads[len(pads) // 2:], -np.inf)
    window = tuple(attributes["kernel_shape"])
    # ONNX's default stride: 1
    return F.maxpool(x, window, tuple(attributes.get("strides", [1] * len(window))))


def _run_flatten(args, attributes):
    x = args[0]
    # in [0, ndim]: -1 leaves the last
    axis = attributes["axis"] + (x.ndim if attributes["axis"] < 0 else 0)
    # (d0, ..., d(ndim-1)) -> (d0 * ... * d(axis-1), d(axis) * ... * d(ndim-1))
    return F.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _run_batch_norm(args, attributes):
    x = args[0]
    scale, offset, mean, variance = (a.data for a in args[1:5])
    s = scale / np.sqrt(variance + attributes.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...): one number per channel
    return x * Tensor((s).reshape(shape)) + Tensor((offset - mean * s).reshape(shape))


def _run_instance_norm(args, attributes):
    x = args[0]
    shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...): one number per channel
    scale, offset = (Tensor(a.data.reshape(shape)) for a in args[1:3])
    return F.instance_norm(x, attributes.get("epsilon", 1e-5)) * scale + offset


def _run_reduce_mean(args, attributes):
    x = args[0]
    # opset 18: an input
    axes = attributes.get("axes", args[1] if len(args) > 1 and args[1] is not None else [])
    axes = [int(a) % x.ndim for a in np.asarray(axes).ravel()]
    if not axes and attributes.get("noop_with_empty_axes", 0):
        return x
    return x.mean(axis=tuple(axes) or None, keepdims=bool(attributes.get("keepdims", 1)))


def _run_reshape(args, attributes):
    x, shape = args[0], [int(n) for n in np.asarray(args[1]).ravel()]
    if not attributes.get("allowzero", 0):  # 0 copies the input's size on that axis
        shape = [x.shape[i] if n == 0 else n for i, n in enumerate(shape)]
    return F.reshape(x, tuple(shape))


def _run_along_axis_one(op: str, function):
    def run(args, attributes):
        x = args[0]
        if attributes["axis"] % x.ndim != 1:
            raise OnnxImportError(f"onnx.Graph: {op} along axis {attributes['axis']} of a "
                                  f"{x.ndim}-D value; tinyflux's works along axis 1")
        return function(x)
    return run


# Each ONNX operation tinyflux reads, and how: what
# it refuses, its Chain layer, its work in a Graph.
IMPORTS = {
    "Conv": NodeForm(_refuse_window, _conv_layer, _run_conv),
    "Relu": NodeForm(_no_variants, _relu_layer, lambda args, attributes: F.relu(args[0])),
    "MaxPool": NodeForm(_refuse_window, _max_pool_layer, _run_max_pool),
    "Gemm": NodeForm(_refuse_gemm, _dense_layer, _run_gemm),
    "Flatten": NodeForm(_no_variants, _axis_one(F.flatten), _run_flatten),
    "Softmax": NodeForm(_no_variants, _axis_one(F.softmax),
                        _run_along_axis_one("Softmax", F.softmax)),
    "LogSoftmax": NodeForm(_no_variants, _axis_one(F.log_softmax),
                           _run_along_axis_one("LogSoftmax", F.log_softmax)),
    "GlobalAveragePool": NodeForm(_no_variants, _global_mean_layer, _run_global_mean),
    "AveragePool": NodeForm(_refuse_average_pool, _average_pool_layer,
                            lambda args, attributes: F.avgpool(args[0],
                                                               tuple(attributes["kernel_shape"]))),
    "BatchNormalization": NodeForm(_refuse_batch_norm, _batch_norm_layer, _run_batch_norm),
    "InstanceNormalization": NodeForm(_no_variants, _instance_norm_layer, _run_instance_norm),
    "Add": NodeForm(_no_variants, _graph_only, lambda args, attributes: args[0] + args[1]),
    "Dropout": NodeForm(_refuse_dropout, _passed_on, lambda args, attributes: args[0]),  # inference
    "Identity": NodeForm(_no_variants, _passed_on, lambda args, attributes: args[0]),
    "ReduceMean": NodeForm(_no_variants, _graph_only, _run_reduce_mean),
    "Reshape": NodeForm(_no_variants, _graph_only, _run_reshape),
}
SUPPORTED = tuple(IMPORTS)


def as_chain(onnx, graph, weights: dict):
    """The graph as an nn.Chain when it is one sequence
    of supported nodes; None when it branches."""
    current, layers = graph.input[0].name, []
    nodes = [(node, _attributes(onnx, node)) for node in graph.node]
    for index, (node, attributes) in enumerate(nodes):
        _check_node(node, attributes, weights)
        data_inputs = [name for name in node.input if name and name not in weights]
        if data_inputs != [current]:
            return None  # a branch or a join: not a chain
        following = (nodes[index + 1][0].op_type,
                     nodes[index + 1][1]) if index + 1 < len(nodes) else None
        params = [weights[name] for name in node.input[1:] if name]
        layer = IMPORTS[node.op_type].layer(params, attributes, layers, following)
        if layer is None:
            return None
        if layer is not PASS:
            layers.append(layer)
        current = node.output[0]
    if current != graph.output[0].name:
        return None
    # GlobalAveragePool keeps (N, C, 1, ...); GlobalMeanPool
    # drops those axes, so the Flatten after it goes
    layers = [layer for i, layer in enumerate(layers)
              if not (layer is F.flatten and i and isinstance(layers[i - 1], nn.GlobalMeanPool))]
    return nn.Chain(*layers)


class Graph(nn.Module):
    """An ONNX graph with branches (residual additions), evaluated node by node with tinyflux's ops.

    Its trainable parameters are the weights and biases of its Conv and Gemm nodes, named by the
    file's initializer names; batch-norm statistics are fixed arrays (inference), as in the file.
    """

    def __init__(self, onnx, graph, weights: dict):
        self.nodes = []
        self.params: dict[str, Tensor] = {}
        trainable = set()
        for node in graph.node:
            attributes = _attributes(onnx, node)
            _check_node(node, attributes, weights)
            if node.op_type in ("Conv", "Gemm"):
                trainable.update(name for name in node.input[1:] if name)
            self.nodes.append((node.op_type, list(node.input), node.output[0], attributes))
        # integer initializers (ReduceMean's axes, Reshape's shape): read, never trained
        self.constants = {}
        for name, array in weights.items():
            if np.asarray(array).dtype.kind in "iub":
                self.constants[name] = np.asarray(array)
            else:
                self.params[name] = Tensor(np.asarray(array, np.float32),
                                           requires_grad=name in trainable)
        self.input, self.output = graph.input[0].name, graph.output[0].name

    def named_parameters(self, prefix: str = ""):
        for name, tensor in self.params.items():
            if tensor.requires_grad:
                yield prefix + name, tensor

    def signature(self) -> str:
        return f"onnx.Graph({len(self.nodes)} nodes)"

    def forward(self, x: Tensor) -> Tensor:
        values = {self.input: as_tensor(x), **self.params, **self.constants}
        for op, inputs, output, attributes in self.nodes:
            args = [values[name] if name else None for name in inputs]
            values[output] = IMPORTS[op].run(args, attributes)
        return values[self.output]
