"""tinyflux: a teaching-sized deep learning framework on NumPy (CPU) and CuPy (CUDA GPUs).

    import tinyflux as tf
    from tinyflux import nn, optim

The public face: :class:`Tensor` and :func:`no_grad` (autograd), the functions
``relu``, ``softmax``, ``log_softmax``, ``logit_cross_entropy``, ``onehot``,
``onecold``, ``conv``, ``maxpool``, ``conv_maxpool`` (the two in one op), the
layers in ``nn``, the optimizers in ``optim``, ``gpu``/``cpu`` to move things
between devices, ``save``/``load`` for checkpoints, ``gradcheck`` for numerical
gradient checks, ``capture`` to replay a whole GPU training step as one CUDA
graph, ``train`` for what every training run needs (the step, schedules, run
folders that lock, save the whole state and resume, and ``fit`` for any model),
``onnx`` and ``safetensors`` to take models out of tinyflux and bring weights
in, ``distributed`` for data-parallel training over MPI, ``models`` for the
model-zoo network, and ``modes``, the switches (grad, capture, own kernels).
How an op reaches NumPy or the CUDA kernels: ``tinyflux/backends``.
"""
from .version import __version__

from . import (backends, checkpoint, data, distributed, functional, models, nn, onnx, optim, plots,
               predict, safetensors, train)
from .backends import available_backends
from .device import cpu, gpu, to_device, xpu
from .functional import (conv, conv_maxpool, flatten, log_softmax, logit_cross_entropy, maxpool,
                         onecold, onehot, relu, softmax)
from .gradcheck import GradcheckError, gradcheck
from .cuda_graph import CaptureError, capture
from .checkpoint import CheckpointError, load, save
from .safetensors import load_state_dict
from .modes import modes, no_grad
from .nn import seed
from .tensor import Tensor

# recycle freed blocks: avoids thousands of page faults per training step
backends.keep_freed_memory()

__all__ = ["CaptureError", "CheckpointError", "GradcheckError", "Tensor", "available_backends",
           "backends", "capture", "checkpoint", "conv", "conv_maxpool", "cpu", "data",
           "distributed", "flatten", "functional", "gpu", "gradcheck", "load", "load_state_dict",
           "log_softmax", "logit_cross_entropy", "maxpool", "models", "modes", "nn", "no_grad",
           "onecold", "onehot", "onnx", "optim", "plots", "predict", "relu", "safetensors", "save",
           "seed", "softmax", "to_device", "train"]
