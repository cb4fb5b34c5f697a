"""What small data sets need besides convolutions:
BatchNorm, Dropout, AvgPool (1-D, 2-D and 3-D alike).

- ``BatchNorm(channels)`` normalises each channel over the batch (see
  ``tinyflux/functional/normalization.py``); it keeps running statistics as
  buffers, saved in checkpoints and in the run state. In a data-parallel run
  each rank normalises with its own slice's statistics (as PyTorch's
  ``BatchNorm`` does, unsynchronised), and ``tf.train.Run`` averages the
  ranks' running statistics at the end of every epoch, before evaluating.
- ``Dropout(p)`` sets each value to 0 with probability p in training, and
  scales the others by 1 / (1 - p) so that the expected output is unchanged;
  in evaluation it passes everything. Its masks come from a generator seeded
  by (the layer's seed, the number of masks drawn so far): the seed is drawn
  from ``tf.seed``'s generator when the layer is built, and the count is a
  buffer, so a resumed run draws the same masks as an uninterrupted one.
- ``InstanceNorm(channels)`` rescales each channel of each example to zero
  mean and unit variance over its own positions; first in a video model, it
  takes away what differs from clip to clip without telling the classes
  apart (the colour of the light, the brightness, the contrast).
- ``AvgPool(window)`` averages windows that tile the input;
  ``AdaptiveMeanPool(grid)`` averages a fixed grid of cells, whatever the
  input's size (Flux's ``AdaptiveMeanPool``, PyTorch's ``AdaptiveAvgPool3d``).
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..modes import modes
from ..cuda_graph import CaptureError
from ..backends import get_array_module
from ..checks import as_tuple, integer, real
from ..functional.normalization import (adaptive_avgpool, avgpool, batch_norm, batch_norm_pool,
                                        instance_norm)
from ..tensor import Tensor, as_tensor
from . import module
from .module import Module, _activation_name, _checked_activation


class BatchNorm(Module):
    """BatchNorm(channels, activation=None, *, momentum=0.1,
    eps=1e-5): y = activation(gamma x_hat + beta).

    ``weight`` is gamma (starts at 1), ``bias`` is beta (starts at 0), PyTorch's names and order.

    >>> BatchNorm(16, F.relu)
    BatchNorm(16, relu)  # 32 parameters
    """

    def __init__(self, channels: int, activation=None, *, momentum: float = 0.1, eps: float = 1e-5):
        self.channels = integer(channels, "BatchNorm channels", minimum=1)
        self.activation = _checked_activation(activation, "BatchNorm")
        self.momentum = real(momentum, "BatchNorm momentum", minimum=0.0, below=1.0 + 1e-12)
        self.eps = real(eps, "BatchNorm eps", minimum=0.0)
        self.weight = Tensor(np.ones(self.channels, np.float32), requires_grad=True)
        self.bias = Tensor(np.zeros(self.channels, np.float32), requires_grad=True)
        self.running_mean = Tensor(np.zeros(self.channels, np.float32))  # buffers: no requires_grad
        self.running_var = Tensor(np.ones(self.channels, np.float32))

    def signature(self) -> str:
        return f"BatchNorm({self.channels}{_activation_name(self.activation)})"

    def forward(self, x: Tensor) -> Tensor:
        y = batch_norm(x, self.weight, self.bias, self.running_mean.data, self.running_var.data,
                       self.training, self.momentum, self.eps, caller=self.signature())
        return y if self.activation is None else self.activation(y)

    def forward_pooled(self, x: Tensor, pool, plan: str) -> Tensor:
        """Same result as ``pool(self(x))`` for the ``"one op"`` plan of ``nn.pooling_plan`` (an
        activation of ReLU or none, windows that tile): ``F.batch_norm_pool``."""
        x = as_tensor(x)
        if x.ndim - 2 != len(pool.window):  # the layers one by one, for their own error
            return pool(self(x))
        return batch_norm_pool(x, self.weight, self.bias, self.running_mean.data,
                               self.running_var.data, self.training, self.momentum, self.eps,
                               pool.window, self.activation is F.relu, caller=self.signature())


class Dropout(Module):
    """Dropout(p): in training, each value becomes 0 with
    probability p and the rest are scaled by 1 / (1 - p).

    >>> Dropout(0.5)
    Dropout(0.5)
    """

    def __init__(self, p: float):
        self.p = real(p, "Dropout p", minimum=0.0, below=1.0)
        # from tf.seed's generator: the same on every run
        self.seed = int(module._rng.integers(2**31))
        # a buffer: masks drawn so far, saved with the run
        self.draws = Tensor(np.zeros(1, np.int64))

    def signature(self) -> str:
        return f"Dropout({self.p:g})"

    def forward(self, x: Tensor) -> Tensor:
        x = as_tensor(x)
        if not self.training or self.p == 0:
            return x
        # the mask is drawn on the host's side of the step: a graph would replay one forever
        if modes.capture:
            raise CaptureError(f"{self.signature()} draws a new mask every step, which a captured "
                               "step (a CUDA graph, --graph) would replay unchanged: train "
                               "this model without --graph")
        xp = get_array_module(x.data)
        # kept on the host (tf.gpu moves only floating buffers): no GPU wait
        count = int(self.draws.data[0])
        self.draws.data[0] = count + 1
        # NumPy, CuPy (on the GPU), TorchNumpy (drawn on the host, moved)
        if hasattr(xp.random, "default_rng"):
            keep = xp.random.default_rng([self.seed,
                                          count]).random(x.shape, dtype=np.float32) >= self.p
        else:  # dpnp has no Generator: the host draws what a CPU run draws, and the mask is moved
            draws = np.random.default_rng([self.seed, count]).random(x.shape, dtype=np.float32)
            keep = xp.asarray(draws >= self.p)
        return x * Tensor(keep.astype(x.dtype) * x.data.dtype.type(1 / (1 - self.p)))


class InstanceNorm(Module):
    """InstanceNorm(channels, *, eps=1e-5): each channel
    of each example to zero mean and unit variance.

    No parameters and no running statistics (PyTorch's ``InstanceNorm3d(channels)`` with its
    defaults): training and evaluation compute the same thing, one example at a time.

    >>> InstanceNorm(3)
    InstanceNorm(3)
    """

    def __init__(self, channels: int, *, eps: float = 1e-5):
        self.channels = integer(channels, "InstanceNorm channels", minimum=1)
        self.eps = real(eps, "InstanceNorm eps", minimum=0.0)

    def signature(self) -> str:
        return f"InstanceNorm({self.channels})"

    def forward(self, x: Tensor) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 3 or x.shape[1] != self.channels:
            raise ValueError(f"{self.signature()}: expected input (N, {self.channels}, *S), "
                             f"got shape {tuple(x.shape)}")
        return instance_norm(x, self.eps, caller=self.signature())


class AvgPool(Module):
    """AvgPool(window): the mean of each window; the windows tile the input (stride = window).

    >>> AvgPool((2, 2))(Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))).data
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]], dtype=float32)
    """

    def __init__(self, window: tuple):
        d = len(window) if isinstance(window, (tuple, list)) else 1
        if d not in (1, 2, 3):
            raise ValueError(f"AvgPool: window must have 1, 2 or 3 sizes, got {window}")
        self.window = as_tuple(window, d, "AvgPool window", minimum=1)

    def signature(self) -> str:
        return f"AvgPool({self.window})"

    def forward(self, x: Tensor) -> Tensor:
        return avgpool(x, self.window, caller=self.signature())


__all__ = ["AdaptiveMeanPool", "AvgPool", "BatchNorm", "Dropout", "InstanceNorm"]


class AdaptiveMeanPool(Module):
    """AdaptiveMeanPool(grid): (N, C, *S) -> (N, C, *grid),
    each output the mean of one cell of a grid laid over S.

    Any input size gives the same output size, as with ``GlobalMeanPool`` (which is ``grid`` of ones
    without the size-1 axes); a grid such as (1, 2, 2) on clips keeps where in the picture a
    feature was (which quarter), averaged over time.

    >>> clip = Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 1, 4, 4))
    >>> AdaptiveMeanPool((1, 2, 2))(clip).data
    array([[[[[ 2.5,  4.5],
              [10.5, 12.5]]]]], dtype=float32)
    """

    def __init__(self, grid: tuple):
        d = len(grid) if isinstance(grid, (tuple, list)) else 1
        if d not in (1, 2, 3):
            raise ValueError(f"AdaptiveMeanPool: grid must have 1, 2 or 3 sizes, got {grid}")
        self.grid = as_tuple(grid, d, "AdaptiveMeanPool grid", minimum=1)

    def signature(self) -> str:
        return f"AdaptiveMeanPool({self.grid})"

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avgpool(x, self.grid, caller=self.signature())
