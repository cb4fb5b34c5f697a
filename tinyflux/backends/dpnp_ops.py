"""``DpnpOps``: the hot operations for dpnp arrays, Intel's
NumPy for SYCL devices (Intel GPUs; the CPU via OpenCL).

dpnp runs NumPy-style code on the device its arrays live on, so NumpyOps's
code runs there almost as written: each slice copy, comparison and product
becomes a SYCL kernel. This class overrides only what dpnp does differently:

- no in-place binary function: ``maximum(y, 0, out=y)`` is refused, so
  bias + ReLU makes its result in one new array instead;
- the matrix product into a page-aligned output (NumpyOps.matmul) is a host
  memory trick; on a device the plain product is the one to use;
- Adam's hyperparameters: NumpyOps reads them with one ``tolist()``, which
  works on dpnp arrays too, so nothing changes there; where the device has no
  float64 (Intel Arc), ``tf.optim.Adam`` keeps them in the parameters' dtype
  (see ``has_float64`` in arrays.py).

What has run: MNIST and the 3-D video example, trained through dpnp on the
CPU's OpenCL device, against NumPy (``.ci/dpnp_check``, log in
docs/results/dpnp_check.log). No Intel GPU has run it.
"""
from __future__ import annotations

from .arrays import get_array_module
from .numpy_ops import NumpyOps


class DpnpOps(NumpyOps):
    """NumpyOps for dpnp arrays."""

    def matmul(self, a, b):
        return a @ b

    def bias_relu(self, x, b):
        """relu(x + b) for x (N, C, *S) and b (C,), as
        one new array (dpnp has no in-place maximum)."""
        # (C,) -> (1, C, 1, ...): broadcast over batch and positions
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return get_array_module(x).maximum(x + b.reshape(shape), 0)
