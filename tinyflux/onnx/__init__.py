"""Models out of tinyflux and into it, as ONNX: ``tf.onnx.export(model,
path, input_shape)`` and ``tf.onnx.load(path)``.

ONNX is a file format for networks that many runtimes read: ONNX Runtime on
CPUs and on NVIDIA, AMD, Intel and Apple GPUs (its CUDA, ROCm/MIGraphX,
OpenVINO, DirectML and CoreML builds), and the converters of most frameworks.
A model is a graph of *nodes* (Conv, Relu, Gemm...), each reading named
values and writing one, and *initializers*, the named weights.

**Export** writes one node per tinyflux operation, in the order of the
model, with the weights under their tinyflux names ("0.weight"); each
layer's form is one entry of the table ``EXPORTS`` (``exporting.py``):

    Conv(kernel, in => out, act, stride, pad)  ->  Conv (+ Relu, Softmax or LogSoftmax)
    MaxPool(window, stride)                    ->  MaxPool
    Dense(in => out, act)                      ->  Gemm with transB=1 (+ the activation)
    BatchNorm(channels, act)                   ->  BatchNormalization, running statistics (+ act)
    InstanceNorm(channels)                     ->  InstanceNormalization, scale 1, bias 0
    Dropout(p)                                 ->  nothing: an exported model is for inference
    AvgPool(window)                            ->  AveragePool, strides = window
    AdaptiveMeanPool(grid)                     ->  AveragePool, cells of the exported input size
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
and its node's name. Each ONNX operation read is one row of the table
``IMPORTS`` (``importing.py``): the variants it refuses, its Chain layer, and
its work in a Graph.

onnx is an optional extra: ``pip install 'tinyflux[onnx]'`` (onnx; the tests
also run the exports in ``onnxruntime``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import nn
from ..device import on_model_device
from ..files import write_file
from ..modes import no_grad
from ..tensor import Tensor
from ..version import __version__
from .exporting import EXPORTS, Exporter
from .importing import IMPORTS, SUPPORTED, Graph, OnnxImportError, as_chain

IR_VERSION = 8
OPSET = 13
MISSING = "ONNX needs the onnx package, an optional extra: pip install 'tinyflux[onnx]'"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None
    return onnx


def export(model, path, input_shape: tuple, metadata: dict | None = None) -> str:
    """Write ``model`` to ``path`` as ONNX, for inputs of one
    example's shape ``input_shape`` (C, *S); returns path.

    The batch axis is left dynamic, and so are the spatial axes (clip length, height, width) when
    the model gives outputs of the same shape for other sizes and has no layer exported for one size
    (a global mean ends in the same features for any size; flatten before Dense or AdaptiveMeanPool
    do not). ``metadata`` (names to strings: the class names as JSON, say) goes into the file's
    metadata_props, which ``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map``
    reads. The file passes ``onnx.checker.check_model(full_check=True)`` before it is written
    (atomically: never half a file)."""
    onnx = _onnx()
    input_shape = tuple(int(n) for n in input_shape)
    # one pass through the layers: each one's input shape, and a clear error if one refuses it
    with no_grad():
        exporter = Exporter(onnx,
                            Tensor(on_model_device(np.zeros((1, *input_shape), np.float32), model)))
        output = exporter.add(model, "input", "")
    out = exporter.sample  # the model's output for one example
    if _takes_any_size(model, input_shape, out.shape):
        spatial = [f"S{i + 1}" for i in range(len(input_shape) - 1)]
    else:
        spatial = list(input_shape[1:])
    helper = onnx.helper
    value = helper.make_tensor_value_info
    inputs = [value("input", onnx.TensorProto.FLOAT, ["N", input_shape[0], *spatial])]
    outputs = [value(output, onnx.TensorProto.FLOAT, ["N", *out.shape[1:]])]
    graph = helper.make_graph(exporter.nodes, "tinyflux", inputs, outputs, exporter.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tinyflux", producer_version=__version__)
    proto.ir_version = IR_VERSION
    for key, text in (metadata or {}).items():
        if not isinstance(text, str):
            raise TypeError(f"onnx.export: metadata {key!r} must be a string (JSON for lists), "
                            f"got {type(text).__name__}")
        proto.metadata_props.add(key=str(key), value=text)
    onnx.checker.check_model(proto, full_check=True)
    write_file(path, proto.SerializeToString(), "ONNX model")
    return str(path)


def _takes_any_size(model, input_shape: tuple, out_shape: tuple) -> bool:
    """Whether the exported graph serves inputs of any spatial size: no layer exported for one size,
    and the model gives outputs of the same shape for inputs 8 larger on every spatial axis."""
    def leaves(layer):
        if not isinstance(layer, nn.Chain):
            return [layer]
        return [leaf for sub in layer.layers for leaf in leaves(sub)]

    if len(input_shape) < 2 or any(isinstance(layer,
                                              nn.AdaptiveMeanPool) for layer in leaves(model)):
        return False
    larger = (input_shape[0], *(n + 8 for n in input_shape[1:]))
    try:
        with no_grad():
            zeros = Tensor(on_model_device(np.zeros((1, *larger), np.float32), model))
            return tuple(model(zeros).shape) == tuple(out_shape)
    except ValueError:  # a Dense that wants the features of one size
        return False


def _read(onnx, path, check: bool = False):
    """The ModelProto in ``path``; OnnxImportError naming the file when it is missing, empty, cut
    short or invalid (protobuf's own errors name neither the file nor the cause)."""
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
        raise OnnxImportError(f"onnx.load: {path}: not a readable ONNX model, damaged or cut "
                              f"short? ({type(error).__name__}: {str(error)[:200]})") from None
    if not proto.graph.node:
        raise OnnxImportError(f"onnx.load: {path}: the model has no nodes (not an "
                              "ONNX model, or cut short?)")
    return proto


def input_shape(path) -> tuple:
    """The shape of the input of the ONNX model in ``path``:
    an int per fixed axis, a name per dynamic one."""
    onnx = _onnx()
    graph = _read(onnx, path).graph
    weights = {init.name for init in graph.initializer}
    [value] = [value for value in graph.input if value.name not in weights][:1] or [None]
    if value is None:
        raise OnnxImportError(f"onnx.input_shape: {path}: the graph has no input")
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                 for d in value.type.tensor_type.shape.dim)


def load(path):
    """The ONNX model in ``path`` as a tinyflux model, in evaluation mode:
    an ``nn.Chain`` for a sequence of layers, else a :class:`Graph`."""
    onnx = _onnx()
    proto = _read(onnx, path, check=True)
    graph = proto.graph
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    # old exporters list weights as inputs
    inputs = [value for value in graph.input if value.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxImportError(f"onnx.load: {path}: one input and one output expected, got "
                              f"{[v.name for v in inputs]} and {[v.name for v in graph.output]}")
    del graph.input[:]
    graph.input.extend(inputs)
    opset = max((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
                default=OPSET)
    # the defaults written in: Softmax's axis was 1 before opset 13, -1 since
    for node in graph.node:
        if node.op_type in ("Flatten", "Softmax",
                            "LogSoftmax") and "axis" not in [a.name for a in node.attribute]:
            default = -1 if node.op_type != "Flatten" and opset >= 13 else 1
            node.attribute.append(onnx.helper.make_attribute("axis", default))
    return (as_chain(onnx, graph, weights) or Graph(onnx, graph, weights)).eval()


__all__ = ["EXPORTS", "Graph", "IMPORTS", "IR_VERSION", "MISSING", "OPSET", "OnnxImportError",
           "SUPPORTED", "export", "input_shape", "load"]
