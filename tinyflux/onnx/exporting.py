"""tf.onnx.export's table: how each tinyflux layer is written as ONNX nodes (the forms are listed in
``tinyflux/onnx/__init__.py``)."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..backends import to_cpu_array
from ..tensor import Tensor

ACTIVATION_NODES = {F.relu: ("Relu", {}), F.softmax: ("Softmax", {"axis": 1}),
                    F.log_softmax: ("LogSoftmax", {"axis": 1})}


class Exporter:
    """Collects the nodes and initializers of a model,
    layer by layer, each reading the previous value."""

    def __init__(self, onnx, sample: Tensor):
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes, self.initializers, self.count = [], [], 0
        # an input carried through the layers as they are added: each one's input shape
        self.sample = sample

    def node(self, op: str, inputs: list, **attributes) -> str:
        self.count += 1
        output = f"{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=f"{op}_{self.count}",
                                                **attributes))
        return output

    def weight(self, name: str, tensor) -> str:
        values = tensor.data if isinstance(tensor, Tensor) else tensor
        array = np.ascontiguousarray(to_cpu_array(values))
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def activation(self, function, x: str, where: str) -> str:
        if function is None:
            return x
        if function not in ACTIVATION_NODES:
            raise ValueError(f"onnx.export: {where} has the activation "
                             f"{getattr(function, '__name__', function)!r}, which has no ONNX "
                             "form here (relu, softmax, log_softmax have)")
        op, attributes = ACTIVATION_NODES[function]
        return self.node(op, [x], **attributes)

    def add(self, layer, x: str, prefix: str) -> str:
        """The nodes of ``layer`` reading the value ``x``; returns the name of its output."""
        if isinstance(layer, nn.Chain):
            for i, sub in enumerate(layer.layers):
                x = self.add(sub, x, f"{prefix}{i}.")
            return x
        shape, self.sample = self.sample.shape, layer(self.sample)
        for kind, write in EXPORTS.items():
            if (isinstance(layer, kind) if isinstance(kind, type) else layer is kind):
                return write(self, layer, x, prefix, shape)
        raise ValueError(f"onnx.export: {layer!r} has no ONNX form in tinyflux; supported: Chain, "
                         + ", ".join(getattr(kind, "__name__", str(kind)) for kind in EXPORTS))

    def weighted(self, op: str, layer, x: str, prefix: str, names: tuple, **attributes) -> str:
        """A node ``op`` reading x and the layer's tensors ``names``,
        saved under prefix + name, then the layer's activation."""
        inputs = [x] + [self.weight(prefix + name, getattr(layer, name)) for name in names]
        return self.activation(layer.activation, self.node(op, inputs, **attributes),
                               layer.signature())


def _export_adaptive_mean(exporter, layer, x, prefix, shape):
    """ONNX has no adaptive pooling: an AveragePool
    whose windows are the cells for this input size."""
    if any(size % k for size, k in zip(shape[2:], layer.grid)):
        raise ValueError(f"onnx.export: {layer.signature()} on inputs of size {tuple(shape[2:])}: "
                         "ONNX has no adaptive pooling, and cells that overlap have no "
                         "AveragePool form; export for a size that the grid divides")
    window = [size // k for size, k in zip(shape[2:], layer.grid)]
    return exporter.node("AveragePool", [x], kernel_shape=window, strides=window)


def _export_instance_norm(exporter, layer, x, prefix, shape):
    """ONNX's InstanceNormalization has a scale and a bias; tinyflux's none: 1 and 0."""
    inputs = [x, exporter.weight(prefix + "scale", np.ones(layer.channels, np.float32)),
              exporter.weight(prefix + "offset", np.zeros(layer.channels, np.float32))]
    return exporter.node("InstanceNormalization", inputs, epsilon=layer.eps)


# Each tinyflux layer (or function in a Chain) and how it
# is written: f(exporter, layer, x, prefix, input shape)
# -> the name of its output. The module docstring lists the same forms.
EXPORTS = {
    nn.Conv: lambda ex, layer, x, prefix, shape: ex.weighted(
        "Conv", layer, x, prefix, ("weight", "bias"), kernel_shape=list(layer.kernel),
        strides=list(layer.stride), pads=list(layer.pad) * 2),  # ONNX: all starts, then all ends
    nn.MaxPool: lambda ex, layer, x, prefix, shape: ex.node(
        "MaxPool", [x], kernel_shape=list(layer.window), strides=list(layer.stride)),
    nn.Dense: lambda ex, layer, x, prefix, shape: ex.weighted(
        "Gemm", layer, x, prefix, ("weight", "bias"), transB=1),
    nn.BatchNorm: lambda ex, layer, x, prefix, shape: ex.weighted(
        "BatchNormalization", layer, x, prefix, ("weight", "bias", "running_mean", "running_var"),
        epsilon=layer.eps),
    nn.InstanceNorm: _export_instance_norm,
    nn.Dropout: lambda ex, layer, x, prefix, shape: x,  # an exported model is for inference
    nn.AvgPool: lambda ex, layer, x, prefix, shape: ex.node(
        "AveragePool", [x], kernel_shape=list(layer.window), strides=list(layer.window)),
    nn.AdaptiveMeanPool: _export_adaptive_mean,
    nn.GlobalMeanPool: lambda ex, layer, x, prefix, shape: ex.node(
        "Flatten", [ex.node("GlobalAveragePool", [x])], axis=1),
    F.flatten: lambda ex, layer, x, prefix, shape: ex.node("Flatten", [x], axis=1),
    **{function: lambda ex, layer, x, prefix, shape: ex.activation(layer, x, "the chain")
       for function in ACTIVATION_NODES},
}
