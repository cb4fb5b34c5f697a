"""Writes torch_small.safetensors and torch_small_io.npz: a small PyTorch network's state_dict and its outputs.

Run once with PyTorch installed (pip install torch==2.13.0, never a dependency of tinyflux):

    python tests/data/make_torch_fixture.py

tests/test_interop.py loads the weights into the same network built with tinyflux and checks
that it gives PyTorch's outputs. The network has ReLU modules of its own, as nn.Sequential
does, so PyTorch's indices (0, 3, 7) differ from tinyflux's (0, 2, 5).
"""
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Flatten(), torch.nn.Linear(8 * 2 * 2, 3))
x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    y = model(x)
save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, HERE / "torch_small.safetensors")
np.savez(HERE / "torch_small_io.npz", x=x.numpy(), y=y.numpy(), torch_version=torch.__version__)
print(sorted(model.state_dict()), torch.__version__)
