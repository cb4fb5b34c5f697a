"""Writes torch_encdec.safetensors and torch_encdec_io.npz: a PyTorch network with batch norm and same-shape layers.

Run once with PyTorch installed (pip install torch==2.13.0, never a dependency of tinyflux):

    python tests/data/make_torch_buffers_fixture.py

The network has an ``encoder`` and a ``decoder`` whose convolutions all have the same shape, so
loading by sorted names would put the decoder's weights into the encoder's layers without an
error; and batch norm whose running statistics were moved by a few training steps, so a load
that left them out would give other outputs. The npz holds the names in module order (a
safetensors file does not keep it), an input, and PyTorch's outputs in evaluation mode.
"""
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


class EncoderDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.decoder = torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, padding=1))
        self.head = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.decoder(self.encoder(x)), 1))


torch.manual_seed(0)
model = EncoderDecoder()
with torch.no_grad():
    for _ in range(5):  # moves the running statistics away from 0 and 1
        model(torch.randn(8, 4, 6, 6) * 3 + 1)
model.eval()
x = torch.rand(5, 4, 6, 6, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    y = model(x)
state = model.state_dict()
save_file({name: tensor.contiguous() for name, tensor in state.items()}, HERE / "torch_encdec.safetensors")
np.savez(HERE / "torch_encdec_io.npz", x=x.numpy(), y=y.numpy(), order=np.array(list(state)),
         torch_version=torch.__version__)
print(list(state), torch.__version__)
