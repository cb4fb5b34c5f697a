"""tinyflux: a teaching-sized deep learning framework on NumPy (CPU) and CuPy (CUDA GPUs).

    import tinyflux as tf
    from tinyflux import nn, optim

The public face: :class:`Tensor` and :func:`no_grad` (autograd), the functions
``relu``, ``softmax``, ``log_softmax``, ``logit_cross_entropy``, ``onehot``,
``onecold``, ``conv``, ``maxpool``, ``conv_maxpool`` (the two in one op), the
layers in ``nn``, the optimizers in ``optim``, ``gpu``/``cpu`` to move things
between devices, ``save``/``load`` for checkpoints, ``gradcheck`` for numerical
gradient checks, ``capture`` to replay a whole GPU training step as one CUDA graph, ``runs`` for run
folders that lock, save the whole training state and resume,
``distributed`` for data-parallel training over MPI, ``models`` for the
model-zoo network, and ``modes``, the switches (grad, capture, own kernels).
How an op reaches NumPy or the CUDA kernels: ``tinyflux/backends``.
"""
from .version import __version__

from . import backend, backends, data, distributed, functional, models, nn, optim, plots, runs
from .backend import available_backends
from .device import cpu, gpu
from .functional import (conv, conv_maxpool, flatten, log_softmax, logit_cross_entropy, maxpool, onecold, onehot,
                         relu, softmax)
from .gradcheck import GradcheckError, gradcheck
from .graph import CaptureError, capture
from .io import CheckpointError, load, save
from .modes import modes, no_grad
from .nn import seed
from .tensor import Tensor

backend.keep_freed_memory()  # recycle freed blocks: avoids thousands of page faults per training step

__all__ = ["CaptureError", "CheckpointError", "GradcheckError", "Tensor", "available_backends", "backend", "backends",
           "capture", "conv", "conv_maxpool", "cpu", "data", "distributed", "flatten", "functional", "gpu", "gradcheck",
           "load", "log_softmax", "logit_cross_entropy", "maxpool", "models", "modes", "nn", "no_grad", "onecold",
           "onehot", "optim", "plots", "relu", "runs", "save", "seed", "softmax"]
