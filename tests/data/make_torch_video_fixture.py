"""Writes torch_video_resnet_{legacy,dynamo}.onnx and their inputs and outputs: a small 3-D ResNet from PyTorch.

Run once with PyTorch installed (pip install torch==2.13.0 onnx onnxscript, never a dependency of tinyflux):

    python tests/data/make_torch_video_fixture.py

The network is built as torchvision's video networks (r3d_18, mc3_18, r2plus1d_18) are, at a few
channels instead of 64 to 512 so that the files stay small: a stem convolution with kernel (3, 7, 7),
stride (1, 2, 2) and batch norm; a residual block of two 3x3x3 convolutions; a block that halves time
and space with stride 2 and a 1x1x1 convolution on its shortcut; a block of (2+1)-D convolutions (a
(1, 3, 3) convolution in space, then a (3, 1, 1) one in time, as r2plus1d_18's); global average
pooling and a dense layer. It is exported twice: by the legacy exporter (opset 13: GlobalAveragePool,
Flatten) and by today's default, the dynamo exporter (opset 18: ReduceMean, Reshape).
tests/test_interop.py imports both with tf.onnx.load and compares their outputs with PyTorch's.
"""
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def conv_bn(cin, cout, kernel, stride=1, padding=0):
    return [torch.nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), torch.nn.BatchNorm3d(cout)]


class Block(torch.nn.Module):
    def __init__(self, cin, cout, stride=1, factorised=False):
        super().__init__()
        if factorised:  # (2+1)-D: space, then time
            first = [*conv_bn(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1)), torch.nn.ReLU(),
                     *conv_bn(cout, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0))]
        else:
            first = conv_bn(cin, cout, 3, stride, 1)
        self.branch = torch.nn.Sequential(*first, torch.nn.ReLU(), *conv_bn(cout, cout, 3, 1, 1))
        self.shortcut = (torch.nn.Sequential(*conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout
                         else torch.nn.Identity())

    def forward(self, x):
        return torch.relu(self.branch(x) + self.shortcut(x))


def video_resnet(classes=5):
    return torch.nn.Sequential(
        *conv_bn(3, 8, (3, 7, 7), (1, 2, 2), (1, 3, 3)), torch.nn.ReLU(),
        Block(8, 8), Block(8, 16, stride=2), Block(16, 16, factorised=True),
        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(16, classes))


def main():
    torch.manual_seed(0)
    model = video_resnet()
    for module in model.modules():  # statistics that are not the identity, as after training
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(2, 3, 8, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    torch.onnx.export(model, (x,), HERE / "torch_video_resnet_legacy.onnx", input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13,
                      dynamo=False)
    torch.onnx.export(model, (x,), HERE / "torch_video_resnet_dynamo.onnx", input_names=["input"],
                      output_names=["output"], dynamic_shapes=({0: torch.export.Dim("N")},), external_data=False)
    np.savez(HERE / "torch_video_resnet_io.npz", x=x.numpy(), y=y.numpy(), torch_version=torch.__version__)
    print(torch.__version__)


if __name__ == "__main__":
    main()
