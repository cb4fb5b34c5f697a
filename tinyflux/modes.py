"""How operations run right now: one object, ``modes``, for the switches tinyflux has.

- ``modes.grad``: whether operations record the graph that ``backward()``
  needs. Off inside ``with tf.no_grad():`` (evaluation: less memory, faster).
- ``modes.capture``: whether a CUDA graph is being recorded (``tf.capture``).
  Then ops take only paths that CUDA accepts inside a capture: tinyflux's own
  kernels, cuBLAS only where ``modes.capture_cublas`` says it has its
  workspace (else tinyflux's own GEMM), and no check that reads a value back
  from the GPU (see ``tinyflux/cuda_graph.py``).
- ``modes.own_kernels``: whether CuPy arrays go through tinyflux's own CUDA
  kernels (``tinyflux/backends/cuda_ops.py``) or through the NumPy-style code
  that CuPy runs as it is. Read once, from the environment variable
  ``TINYFLUX_CUDA_KERNELS`` (``0`` turns them off), when tinyflux is imported.
- ``modes.cpu_kernels``: whether NumPy arrays go through tinyflux's Numba
  kernels where it has them (``tinyflux/backends/numba_ops.py``), when Numba
  is installed. ``TINYFLUX_CPU_KERNELS=0`` turns them off: then the NumPy code,
  the reference, runs everything.

Each switch is a plain attribute: ``modes.own_kernels = False`` works too.
The context managers below set one for a block and put it back afterwards,
also when the block raises.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass
class Modes:
    grad: bool = True
    capture: bool = False
    capture_cublas: bool = False
    own_kernels: bool = os.environ.get("TINYFLUX_CUDA_KERNELS", "1") != "0"
    cpu_kernels: bool = os.environ.get("TINYFLUX_CPU_KERNELS", "1") != "0"


modes = Modes()


@contextlib.contextmanager
def _switched(name: str, value: bool):
    previous = getattr(modes, name)
    setattr(modes, name, value)
    try:
        yield
    finally:
        setattr(modes, name, previous)


def no_grad():
    """Within this block, operations record no graph (for evaluation: less memory, faster).

    >>> import tinyflux as tf
    >>> with tf.no_grad():
    ...     y = tf.Tensor([1.0, 2.0], requires_grad=True) * 2
    >>> y.creator is None
    True
    """
    return _switched("grad", False)


@contextlib.contextmanager
def capturing(cublas: bool = False):
    """Within this block, ops take only the paths a CUDA-graph capture accepts
    (``modes.capture``); cuBLAS among them where ``cublas`` (``modes.capture_cublas``:
    the caller has given cuBLAS its workspace)."""
    with _switched("capture", True), _switched("capture_cublas", cublas):
        yield
