"""Writes torch_resnet_block.onnx and its inputs and outputs: a small residual network exported by PyTorch.

Run once with PyTorch installed (pip install torch==2.13.0 onnx, never a dependency of tinyflux):

    python tests/data/make_torch_onnx_fixture.py

The network has what image networks such as ResNet-18 are made of: a stem convolution with batch
norm, a max-pool that pads its input, a residual block (two convolutions with batch norm, the block's
input added back), global average pooling and a dense layer. tests/test_interop.py imports the file
with tf.onnx.load and compares its outputs with PyTorch's.
"""
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


class Block(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    torch.nn.MaxPool2d(3, stride=2, padding=1), Block(8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    torch.nn.Linear(8, 5))
for module in model.modules():  # statistics that are not the identity, as after training
    if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.data.uniform_(0.5, 1.5)
        module.bias.data.uniform_(-0.2, 0.2)
model.eval()
x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    y = model(x)
torch.onnx.export(model, (x,), HERE / "torch_resnet_block.onnx", input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13, dynamo=False)
np.savez(HERE / "torch_resnet_block_io.npz", x=x.numpy(), y=y.numpy(), torch_version=torch.__version__)
print(torch.__version__)
