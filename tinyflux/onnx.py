"""Models out of tinyflux and into it, as ONNX: ``tf.onnx.export(model, path, input_shape)`` and ``tf.onnx.load(path)``.

ONNX is a file format for networks that many runtimes read: ONNX Runtime on
CPUs and on NVIDIA, AMD, Intel and Apple GPUs (its CUDA, ROCm/MIGraphX,
OpenVINO, DirectML and CoreML builds), and the converters of most frameworks.
A model is a graph of *nodes* (Conv, Relu, Gemm...), each reading named
values and writing one, and *initializers*, the named weights.

**Export** writes one node per tinyflux operation, in the order of the
model, with the weights under their tinyflux names ("0.weight"):

    Conv(kernel, in => out, act, stride, pad)  ->  Conv (+ Relu, Softmax or LogSoftmax)
    MaxPool(window, stride)                    ->  MaxPool
    Dense(in => out, act)                      ->  Gemm with transB=1 (+ the activation)
    BatchNorm(channels, act)                   ->  BatchNormalization with the running statistics (+ act)
    InstanceNorm(channels)                     ->  InstanceNormalization, scale 1, bias 0
    Dropout(p)                                 ->  nothing: an exported model is for inference
    AvgPool(window)                            ->  AveragePool, strides = window
    AdaptiveMeanPool(grid)                     ->  AveragePool for the exported input size (cells that tile it)
    flatten                                    ->  Flatten(axis=1)
    GlobalMeanPool()                           ->  GlobalAveragePool, Flatten(axis=1)
    relu, softmax, log_softmax (in a Chain)    ->  Relu, Softmax(axis=1), LogSoftmax(axis=1)

in 1-D, 2-D and 3-D alike. The batch axis is dynamic ("N"). The file uses
IR version 8 and opset 13, which ONNX Runtime has read since its 1.10
(2021) and the other runtimes as long: the newest IR version that onnx
1.23 writes by default is refused by many installed runtimes.

**Import** gives a tinyflux model: an ``nn.Chain`` when the graph is a
sequence of those operations (Conv followed by Relu becomes one
``Conv(..., relu)``; BatchNormalization becomes ``BatchNorm`` with the
file's statistics; Dropout and Identity are left out);
otherwise, for graphs with branches such as the residual additions of
ResNets, a :class:`Graph`, a module that evaluates the nodes one by one in
the file's order with tinyflux's ops, so it trains and backpropagates like
any model. An operation tinyflux cannot represent is refused with its type
and its node's name.

onnx is an optional extra: ``pip install 'tinyflux[onnx]'`` (onnx; the tests
also run the exports in ``onnxruntime``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import functional as F
from . import nn
from .backends import to_cpu_array
from .device import on_model_device
from .files import write_file
from .modes import no_grad
from .tensor import Tensor, as_tensor
from .version import __version__

IR_VERSION = 8
OPSET = 13
MISSING = "ONNX needs the onnx package, an optional extra: pip install 'tinyflux[onnx]'"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None
    return onnx


# -- export -----------------------------------------------------------------------------------------------
ACTIVATION_NODES = {F.relu: ("Relu", {}), F.softmax: ("Softmax", {"axis": 1}),
                    F.log_softmax: ("LogSoftmax", {"axis": 1})}


class _Exporter:
    """Collects the nodes and initializers of a model, layer by layer, each reading the previous value."""

    def __init__(self, onnx, sample: Tensor):
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0
        self.sample = sample  # an input carried through the layers as they are added: each one's input shape

    def node(self, op: str, inputs: list, **attributes) -> str:
        self.count += 1
        output = f"{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=f"{op}_{self.count}", **attributes))
        return output

    def weight(self, name: str, tensor) -> str:
        array = np.ascontiguousarray(to_cpu_array(tensor.data if isinstance(tensor, Tensor) else tensor))
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def activation(self, function, x: str, where: str) -> str:
        if function is None:
            return x
        if function not in ACTIVATION_NODES:
            raise ValueError(f"onnx.export: {where} has the activation {getattr(function, '__name__', function)!r}, "
                             f"which has no ONNX form here (relu, softmax, log_softmax have)")
        op, attributes = ACTIVATION_NODES[function]
        return self.node(op, [x], **attributes)

    def add(self, layer, x: str, prefix: str) -> str:
        """The nodes of ``layer`` reading the value ``x``; returns the name of its output."""
        if isinstance(layer, nn.Chain):
            for i, sub in enumerate(layer.layers):
                x = self.add(sub, x, f"{prefix}{i}.")
            return x
        shape, self.sample = self.sample.shape, layer(self.sample)
        if isinstance(layer, nn.AdaptiveMeanPool):  # ONNX has no adaptive pooling: windows for this input size
            if any(size % k for size, k in zip(shape[2:], layer.grid)):
                raise ValueError(f"onnx.export: {layer.signature()} on inputs of size {tuple(shape[2:])}: ONNX has "
                                 "no adaptive pooling, and cells that overlap have no AveragePool form; export for "
                                 "a size that the grid divides")
            window = [size // k for size, k in zip(shape[2:], layer.grid)]
            return self.node("AveragePool", [x], kernel_shape=window, strides=window)
        if isinstance(layer, nn.Conv):
            inputs = [x, self.weight(prefix + "weight", layer.weight), self.weight(prefix + "bias", layer.bias)]
            y = self.node("Conv", inputs, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                          pads=list(layer.pad) * 2)  # ONNX pads: all the starts, then all the ends
            return self.activation(layer.activation, y, layer.signature())
        if isinstance(layer, nn.MaxPool):
            return self.node("MaxPool", [x], kernel_shape=list(layer.window), strides=list(layer.stride))
        if isinstance(layer, nn.Dense):
            inputs = [x, self.weight(prefix + "weight", layer.weight), self.weight(prefix + "bias", layer.bias)]
            return self.activation(layer.activation, self.node("Gemm", inputs, transB=1), layer.signature())
        if isinstance(layer, nn.BatchNorm):
            inputs = [x] + [self.weight(prefix + name, tensor) for name, tensor in (
                ("weight", layer.weight), ("bias", layer.bias), ("running_mean", layer.running_mean),
                ("running_var", layer.running_var))]
            y = self.node("BatchNormalization", inputs, epsilon=layer.eps)
            return self.activation(layer.activation, y, layer.signature())
        if isinstance(layer, nn.InstanceNorm):  # ONNX's has a scale and a bias; this one none: 1 and 0
            inputs = [x, self.weight(prefix + "scale", np.ones(layer.channels, np.float32)),
                      self.weight(prefix + "offset", np.zeros(layer.channels, np.float32))]
            return self.node("InstanceNormalization", inputs, epsilon=layer.eps)
        if isinstance(layer, nn.Dropout):
            return x
        if isinstance(layer, nn.AvgPool):
            return self.node("AveragePool", [x], kernel_shape=list(layer.window), strides=list(layer.window))
        if isinstance(layer, nn.GlobalMeanPool):
            return self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        if layer is F.flatten:
            return self.node("Flatten", [x], axis=1)
        if layer in ACTIVATION_NODES:
            return self.activation(layer, x, "the chain")
        raise ValueError(f"onnx.export: {layer!r} has no ONNX form in tinyflux; supported: Chain, Conv, MaxPool, "
                         "Dense, BatchNorm, InstanceNorm, Dropout, AvgPool, AdaptiveMeanPool, GlobalMeanPool, flatten, "
                         "relu, softmax, log_softmax")


def export(model, path, input_shape: tuple, metadata: dict | None = None) -> str:
    """Write ``model`` to ``path`` as ONNX, for inputs of one example's shape ``input_shape`` (C, *S); returns path.

    The batch axis is left dynamic, and so are the spatial axes (clip length, height, width) when the model
    gives outputs of the same shape for other sizes and has no layer exported for one size (a global
    mean ends in the same features for any size; flatten before Dense or AdaptiveMeanPool do not).
    ``metadata`` (names to strings: the class names as JSON, say) goes into
    the file's metadata_props, which ``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map``
    reads. The file passes ``onnx.checker.check_model(full_check=True)`` before it is written (atomically:
    never half a file).
    """
    onnx = _onnx()
    input_shape = tuple(int(n) for n in input_shape)
    with no_grad():  # one pass through the layers: each one's input shape, and a clear error if one refuses it
        exporter = _Exporter(onnx, Tensor(on_model_device(np.zeros((1, *input_shape), np.float32), model)))
        output = exporter.add(model, "input", "")
    out = exporter.sample  # the model's output for one example
    spatial = [f"S{i + 1}" for i in range(len(input_shape) - 1)] if _takes_any_size(model, input_shape, out.shape) \
        else list(input_shape[1:])
    helper = onnx.helper
    value = helper.make_tensor_value_info
    graph = helper.make_graph(exporter.nodes, "tinyflux",
                              [value("input", onnx.TensorProto.FLOAT, ["N", input_shape[0], *spatial])],
                              [value(output, onnx.TensorProto.FLOAT, ["N", *out.shape[1:]])], exporter.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinyflux",
                              producer_version=__version__)
    proto.ir_version = IR_VERSION
    for key, text in (metadata or {}).items():
        if not isinstance(text, str):
            raise TypeError(f"onnx.export: metadata {key!r} must be a string (JSON for lists), got {type(text).__name__}")
        proto.metadata_props.add(key=str(key), value=text)
    onnx.checker.check_model(proto, full_check=True)
    write_file(path, proto.SerializeToString(), "ONNX model")
    return str(path)


def _takes_any_size(model, input_shape: tuple, out_shape: tuple) -> bool:
    """Whether the exported graph serves inputs of any spatial size: no layer exported for one size, and the
    model gives outputs of the same shape for inputs 8 larger on every spatial axis."""
    def leaves(layer):
        return [leaf for sub in layer.layers for leaf in leaves(sub)] if isinstance(layer, nn.Chain) else [layer]

    if len(input_shape) < 2 or any(isinstance(layer, nn.AdaptiveMeanPool) for layer in leaves(model)):
        return False
    larger = (input_shape[0], *(n + 8 for n in input_shape[1:]))
    try:
        with no_grad():
            return tuple(model(Tensor(on_model_device(np.zeros((1, *larger), np.float32), model))).shape) == \
                tuple(out_shape)
    except ValueError:  # a Dense that wants the features of one size
        return False


# -- import -----------------------------------------------------------------------------------------------
SUPPORTED = ("Conv", "Relu", "MaxPool", "Gemm", "Flatten", "Softmax", "LogSoftmax", "GlobalAveragePool",
             "AveragePool", "BatchNormalization", "InstanceNormalization", "Add", "Dropout", "Identity", "ReduceMean",
             "Reshape")
# Today's PyTorch exporter (dynamo, opset 18 and up) writes AdaptiveAvgPool as ReduceMean, whose axes are then an
# input, and Flatten as Reshape to a shape given as an input: such graphs are read as a Graph, node by node.


class OnnxImportError(ValueError):
    """The ONNX file holds something tinyflux cannot represent; the message names the node."""


def _attributes(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _check_node(node, attributes: dict, weights: dict) -> None:
    """Refuse the variants of supported operations that tinyflux does not have, naming the node."""
    where = f"{node.op_type} node {node.name or '(unnamed)'}"
    if node.op_type not in SUPPORTED:
        raise OnnxImportError(f"onnx.load: the {where} has no tinyflux form; supported: {', '.join(SUPPORTED)}")
    if node.op_type in ("Conv", "MaxPool"):
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise OnnxImportError(f"onnx.load: the {where} uses auto_pad; only explicit pads are supported")
        pads = list(attributes.get("pads", []))
        if pads[:len(pads) // 2] != pads[len(pads) // 2:]:
            raise OnnxImportError(f"onnx.load: the {where} pads its two sides differently ({pads})")
        if any(d != 1 for d in attributes.get("dilations", [])) or attributes.get("group", 1) != 1 or \
                attributes.get("ceil_mode", 0):
            raise OnnxImportError(f"onnx.load: the {where} uses dilations, groups or ceil_mode, which tinyflux "
                                  "does not have")
    if node.op_type == "Gemm" and (attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or
                                   attributes.get("beta", 1.0) != 1.0):
        raise OnnxImportError(f"onnx.load: the {where} has transA, alpha or beta, which Dense does not")
    if node.op_type == "AveragePool" and (list(attributes.get("strides", [])) != list(attributes["kernel_shape"]) or
                                          any(attributes.get("pads", [])) or attributes.get("ceil_mode", 0)):
        raise OnnxImportError(f"onnx.load: the {where} is not made of windows that tile the input (strides = "
                              "kernel, no pads), the only average pooling tinyflux has")
    if node.op_type == "BatchNormalization" and attributes.get("training_mode", 0):
        raise OnnxImportError(f"onnx.load: the {where} has training_mode=1 (batch statistics at inference); "
                              "tinyflux imports models for inference, with the running statistics")
    if node.op_type == "Dropout" and (attributes.get("is_test", 1) == 0 or  # before opset 7: is_test=0 trains
                                      (len(node.input) > 2 and node.input[2] and
                                       bool(np.asarray(weights.get(node.input[2], True)).any()))):
        raise OnnxImportError(f"onnx.load: the {where} drops at random (training_mode true, or not a constant); "
                              "tinyflux imports models for inference, where Dropout passes its input on")


def _conv(weight: np.ndarray, bias, attributes: dict) -> nn.Conv:
    kernel = tuple(int(k) for k in weight.shape[2:])
    layer = nn.Conv(kernel, int(weight.shape[1]), int(weight.shape[0]),
                    stride=tuple(attributes.get("strides", [1] * len(kernel))),
                    pad=tuple(attributes.get("pads", [0] * 2 * len(kernel))[:len(kernel)]))
    layer.weight.data = weight.astype(np.float32)
    layer.bias.data = (np.zeros(weight.shape[0]) if bias is None else bias).astype(np.float32)
    return layer


def _dense(weight: np.ndarray, bias, transposed: bool) -> nn.Dense:
    weight = weight if transposed else weight.T  # Dense keeps (out, in), as Gemm with transB=1
    layer = nn.Dense(int(weight.shape[1]), int(weight.shape[0]))
    layer.weight.data = np.ascontiguousarray(weight, dtype=np.float32)
    layer.bias.data = (np.zeros(weight.shape[0]) if bias is None else bias).astype(np.float32)
    return layer


def _batch_norm(scale, offset, mean, variance, eps: float) -> nn.BatchNorm:
    layer = nn.BatchNorm(len(scale), eps=eps)
    for tensor, array in ((layer.weight, scale), (layer.bias, offset), (layer.running_mean, mean),
                          (layer.running_var, variance)):
        tensor.data = np.asarray(array, np.float32)
    return layer


def _as_chain(onnx, graph, weights: dict):
    """The graph as an nn.Chain when it is one sequence of supported nodes; None when it branches."""
    current, layers = graph.input[0].name, []
    for node in graph.node:
        attributes = _attributes(onnx, node)
        _check_node(node, attributes, weights)
        data_inputs = [name for name in node.input if name and name not in weights]
        if data_inputs != [current] or node.op_type in ("Add", "ReduceMean", "Reshape"):
            return None  # a branch or a join, or shapes that only the Graph follows: not a chain
        params = [weights[name] for name in node.input[1:] if name]
        last = layers[-1] if layers else None
        if node.op_type == "Conv":
            layers.append(_conv(params[0], params[1] if len(params) > 1 else None, attributes))
        elif node.op_type == "Gemm":
            layers.append(_dense(params[0], params[1] if len(params) > 1 else None, attributes.get("transB", 0)))
        elif node.op_type == "BatchNormalization":
            layers.append(_batch_norm(*params, attributes.get("epsilon", 1e-5)))
        elif node.op_type == "InstanceNormalization":
            if not (np.all(params[0] == 1) and np.all(params[1] == 0)):
                return None  # a learned scale or bias: the Graph computes it
            layers.append(nn.InstanceNorm(len(params[0]), eps=attributes.get("epsilon", 1e-5)))
        elif node.op_type == "AveragePool":
            layers.append(nn.AvgPool(tuple(attributes["kernel_shape"])))
        elif node.op_type == "Relu" and isinstance(last, (nn.Conv, nn.Dense, nn.BatchNorm)) and \
                last.activation is None:
            last.activation = F.relu
        elif node.op_type in ("Flatten", "Softmax", "LogSoftmax") and attributes["axis"] != 1:
            return None  # another axis (-1 is the last, axis 1 only for 2-D values): the Graph follows shapes
        elif node.op_type in ("Relu", "Softmax", "LogSoftmax"):
            layers.append({"Relu": F.relu, "Softmax": F.softmax, "LogSoftmax": F.log_softmax}[node.op_type])
        elif node.op_type == "MaxPool":
            if any(attributes.get("pads", [])):  # nn.MaxPool does not pad: the Graph does it with a pad op
                return None
            window = tuple(attributes["kernel_shape"])
            layers.append(nn.MaxPool(window, tuple(attributes.get("strides", [1] * len(window)))))  # ONNX's default
        elif node.op_type == "Flatten":
            layers.append(F.flatten)
        elif node.op_type == "GlobalAveragePool":
            following = graph.node[list(graph.node).index(node) + 1:][:1]
            if not (following and following[0].op_type == "Flatten" and _attributes(onnx, following[0])["axis"] == 1):
                return None  # GlobalMeanPool drops the axes of size 1 that ONNX keeps: the Graph keeps them
            layers.append(nn.GlobalMeanPool())
        current = node.output[0]  # Dropout and Identity pass their input on
    if current != graph.output[0].name:
        return None
    # GlobalAveragePool keeps (N, C, 1, ...); GlobalMeanPool drops those axes, so the Flatten after it goes
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
        self.constants = {}  # integer initializers (ReduceMean's axes, Reshape's shape): read, never trained
        for name, array in weights.items():
            if np.asarray(array).dtype.kind in "iub":
                self.constants[name] = np.asarray(array)
            else:
                self.params[name] = Tensor(np.asarray(array, np.float32), requires_grad=name in trainable)
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
            values[output] = _run(op, args, attributes)
        return values[self.output]


def _run(op: str, args: list, attributes: dict) -> Tensor:
    """One node's work with tinyflux's functions."""
    x = args[0]
    if op == "Conv":
        d = x.ndim - 2
        return F.conv(x, args[1], args[2] if len(args) > 2 else None, tuple(attributes.get("strides", [1] * d)),
                      tuple(attributes.get("pads", [0] * 2 * d)[:d]))
    if op == "Gemm":
        weight = args[1] if attributes.get("transB", 0) else args[1].T  # (out, in) for linear
        return F.linear(x, weight, args[2] if len(args) > 2 else None)
    if op == "Relu":
        return F.relu(x)
    if op == "MaxPool":
        pads = list(attributes.get("pads", []))
        if any(pads):  # padded with -inf, so that a pad never wins a window
            x = F.pad(x, pads[:len(pads) // 2], pads[len(pads) // 2:], -np.inf)
        window = tuple(attributes["kernel_shape"])
        return F.maxpool(x, window, tuple(attributes.get("strides", [1] * len(window))))  # ONNX's default stride: 1
    if op == "Add":
        return x + args[1]
    if op == "AveragePool":
        return F.avgpool(x, tuple(attributes["kernel_shape"]))
    if op == "Flatten":
        axis = attributes["axis"] + (x.ndim if attributes["axis"] < 0 else 0)  # in [0, ndim]: -1 leaves the last
        # (d0, ..., d(ndim-1)) -> (d0 * ... * d(axis-1), d(axis) * ... * d(ndim-1))
        return F.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))
    if op == "GlobalAveragePool":
        return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
    if op == "BatchNormalization":
        scale, offset, mean, variance = (a.data for a in args[1:5])
        s = scale / np.sqrt(variance + attributes.get("epsilon", 1e-5))
        shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...): one number per channel
        return x * Tensor((s).reshape(shape)) + Tensor((offset - mean * s).reshape(shape))
    if op == "InstanceNormalization":
        shape = (1, -1) + (1,) * (x.ndim - 2)  # (C,) -> (1, C, 1, ...): one number per channel
        scale, offset = (Tensor(a.data.reshape(shape)) for a in args[1:3])
        return F.instance_norm(x, attributes.get("epsilon", 1e-5)) * scale + offset
    if op == "ReduceMean":
        axes = attributes.get("axes", args[1] if len(args) > 1 and args[1] is not None else [])  # opset 18: an input
        axes = [int(a) % x.ndim for a in np.asarray(axes).ravel()]
        if not axes and attributes.get("noop_with_empty_axes", 0):
            return x
        return x.mean(axis=tuple(axes) or None, keepdims=bool(attributes.get("keepdims", 1)))
    if op == "Reshape":
        shape = [int(n) for n in np.asarray(args[1]).ravel()]
        if not attributes.get("allowzero", 0):  # 0 copies the input's size on that axis
            shape = [x.shape[i] if n == 0 else n for i, n in enumerate(shape)]
        return F.reshape(x, tuple(shape))
    if op in ("Softmax", "LogSoftmax"):
        if attributes["axis"] % x.ndim != 1:
            raise OnnxImportError(f"onnx.Graph: {op} along axis {attributes['axis']} of a {x.ndim}-D value; "
                                  "tinyflux's works along axis 1")
        return F.softmax(x) if op == "Softmax" else F.log_softmax(x)
    return x  # Dropout and Identity: the input, unchanged, at inference


def _read(onnx, path, check: bool = False):
    """The ModelProto in ``path``; OnnxImportError naming the file when it is missing, empty, cut short or invalid
    (protobuf's own errors name neither the file nor the cause)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise OnnxImportError(f"onnx.load: {path}: no such file")
    if path.stat().st_size == 0:
        raise OnnxImportError(f"onnx.load: {path}: the file is empty")
    try:
        proto = onnx.load(str(path))
        if check:
            onnx.checker.check_model(proto)
    except Exception as error:  # protobuf's DecodeError, onnx's ValidationError, an OSError...
        raise OnnxImportError(f"onnx.load: {path}: not a readable ONNX model, damaged or cut short? "
                              f"({type(error).__name__}: {str(error)[:200]})") from None
    if not proto.graph.node:
        raise OnnxImportError(f"onnx.load: {path}: the model has no nodes (not an ONNX model, or cut short?)")
    return proto


def input_shape(path) -> tuple:
    """The shape of the input of the ONNX model in ``path``: an int per fixed axis, a name per dynamic one."""
    onnx = _onnx()
    graph = _read(onnx, path).graph
    weights = {init.name for init in graph.initializer}
    [value] = [value for value in graph.input if value.name not in weights][:1] or [None]
    if value is None:
        raise OnnxImportError(f"onnx.input_shape: {path}: the graph has no input")
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim)


def load(path):
    """The ONNX model in ``path`` as a tinyflux model, in evaluation mode: an ``nn.Chain`` for a sequence of
    layers, else a :class:`Graph`."""
    onnx = _onnx()
    proto = _read(onnx, path, check=True)
    graph = proto.graph
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]  # old exporters list weights as inputs
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxImportError(f"onnx.load: {path}: one input and one output expected, got "
                              f"{[v.name for v in inputs]} and {[v.name for v in graph.output]}")
    del graph.input[:]
    graph.input.extend(inputs)
    opset = max((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), default=OPSET)
    for node in graph.node:  # the defaults written in: Softmax's axis was 1 before opset 13, -1 since
        if node.op_type in ("Flatten", "Softmax", "LogSoftmax") and "axis" not in [a.name for a in node.attribute]:
            default = -1 if node.op_type != "Flatten" and opset >= 13 else 1
            node.attribute.append(onnx.helper.make_attribute("axis", default))
    return (_as_chain(onnx, graph, weights) or Graph(onnx, graph, weights)).eval()


__all__ = ["Graph", "IR_VERSION", "MISSING", "OPSET", "OnnxImportError", "export", "input_shape", "load"]
