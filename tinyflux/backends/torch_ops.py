"""``TorchOps``: the hot operations for TorchArrays,
NumPy's interface on PyTorch's tensors (torch_arrays.py).

NumpyOps's code runs on TorchArrays as written: each slice copy, comparison
and product becomes one of PyTorch's kernels on the tensor's device (Apple's
MPS, an AMD or Intel GPU, an NVIDIA GPU, or the CPU). This class overrides
only what is a host-memory trick in NumpyOps:

- the matrix product into a page-aligned output (NumpyOps.matmul) helps the
  CPU's caches only; here the plain product is the one to use;
- Adam's hyperparameters: NumpyOps reads them with one ``tolist()``, which
  torch answers too, so nothing changes; where the device has no float64
  (MPS), ``tf.optim.Adam`` keeps them in the parameters' dtype (see
  ``has_float64`` in arrays.py).

The convolution stays tinyflux's own (im2col and a matrix product), so what
runs here is what the walkthrough explains. PyTorch's own convolution kernels
would be faster on a GPU; they are not used.
"""
from __future__ import annotations

from .numpy_ops import NumpyOps


class TorchOps(NumpyOps):
    """NumpyOps for TorchArrays."""

    def matmul(self, a, b):
        return a @ b
