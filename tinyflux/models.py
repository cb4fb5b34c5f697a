"""Ready-made networks, for the benchmark, the CI scripts and the tests to share.

``mnist_convnet()`` is the Flux model-zoo network that ``examples/mnist_conv.py``
trains: three 3x3 convolutions with ReLU and 2x2 max-pooling, then one dense
layer; ``video_convnet()`` is its 3-D version from ``examples/video_conv.py``.
The examples build the same networks in their ``build_model``, written out
line by line to be read; tests check that the two print alike.
"""
from __future__ import annotations

import math

from . import functional as F
from . import nn


def mnist_convnet(in_channels: int = 1, classes: int = 10, size: tuple = (28, 28)) -> nn.Chain:
    """The model-zoo convnet for images of ``size`` with
    ``in_channels`` channels: 16,938 parameters for MNIST."""
    # 32 channels after three 2x2 poolings: 32 * 3 * 3 = 288
    features = 32 * (size[0] // 8) * (size[1] // 8)
    return nn.Chain(
        nn.Conv((3, 3), in_channels, 16, F.relu, pad=1), nn.MaxPool((2, 2)),
        nn.Conv((3, 3), 16, 32, F.relu, pad=1), nn.MaxPool((2, 2)),
        nn.Conv((3, 3), 32, 32, F.relu, pad=1), nn.MaxPool((2, 2)),
        nn.flatten, nn.Dense(features, classes))


def video_convnet(in_channels: int = 1, classes: int = 80, frames: int = 16,
                  size: tuple = (32, 32)) -> nn.Chain:
    """The 3-D version that ``examples/video_conv.py`` trains on clips (N, C, T, H, W): 99,552
    parameters for its default moving digits (1 channel, 16 frames of 32x32, 80 classes)."""
    features = 32 * (frames // 8) * (size[0] // 8) * (size[1] // 8)  # after three 2x2x2 poolings
    return nn.Chain(
        nn.Conv((3, 3, 3), in_channels, 8, F.relu, pad=1), nn.MaxPool((2, 2, 2)),
        nn.Conv((3, 3, 3), 8, 16, F.relu, pad=1), nn.MaxPool((2, 2, 2)),
        nn.Conv((3, 3, 3), 16, 32, F.relu, pad=1), nn.MaxPool((2, 2, 2)),
        nn.flatten, nn.Dense(features, classes))


def video_bn_net(in_channels: int = 3, classes: int = 4, width: int = 16, dropout: float = 0.5,
                 standardize: bool = True, grid: tuple = (1, 2, 2)) -> nn.Chain:
    """For clips of your own, a few hundred per class:
    Conv-BatchNorm-ReLU blocks, a mean per quarter, dropout.

    First (``standardize``) each colour of each clip is rescaled to zero mean and unit variance
    (``nn.InstanceNorm``), so that the tint of the light, the brightness and the contrast of a clip,
    which differ from clip to clip without telling the classes apart, do not drown what moves: batch
    normalisation alone normalises over the batch, and leaves those differences in. Then three
    blocks of a 3x3x3 convolution, batch normalisation with ReLU and 2x2x2 max-pooling, widths
    ``width``, 2 ``width``, 4 ``width``; then the mean of each channel over all frames in each cell
    of ``grid`` (``nn.AdaptiveMeanPool``: by default the four quarters of the picture, so any clip
    size and length fits), dropout, and a dense layer. The quarters keep where a motion happened,
    which a mean over the whole picture forgets: a bar turning clockwise moves right at the top and
    left at the bottom, and the mean of the two is no motion at all. Dropout drops half of the
    quarter means in training, so that no class rests on one quarter: a motion of the whole picture
    (a camera pan) then counts in all four, and one object moving in one corner counts less. With
    width 16: 71 thousand parameters, for 3 channels and 4 classes."""
    widths = (width, 2 * width, 4 * width)
    layers, channels = [nn.InstanceNorm(in_channels)] if standardize else [], in_channels
    for out in widths:
        layers += [nn.Conv((3, 3, 3), channels, out, pad=1), nn.BatchNorm(out, F.relu),
                   nn.MaxPool((2, 2, 2))]
        channels = out
    cells = math.prod(grid)
    # (N, C, *grid) -> (N, C * cells)
    return nn.Chain(*layers, nn.AdaptiveMeanPool(grid), nn.flatten,
                    nn.Dropout(dropout), nn.Dense(channels * cells, classes))
