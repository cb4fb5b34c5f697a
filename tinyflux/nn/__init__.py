"""Layers: a layer is its parameters plus a call, as in Flux; ``Chain`` calls layers in order.

    module.py         Module (parameters, buffers, training and evaluation modes, summary), seed,
                      Summary
    layers.py         Conv, MaxPool, Dense, GlobalMeanPool, and pooling_plan
    frozen.py         FrameFeatures, ClipFeatures: pretrained networks, frozen, their features
                      computed once
    normalization.py  BatchNorm, InstanceNorm, Dropout, AvgPool, AdaptiveMeanPool: what small data
                      sets need
    chain.py          Chain

``flatten`` is the functional one, (N, ...) -> (N, prod(...)), usable as a layer.
"""
from ..functional import flatten
from .chain import Chain
from .frozen import ClipFeatures, FrameFeatures
from .layers import Conv, Dense, GlobalMeanPool, MaxPool, pooling_plan
from .module import Module, Summary, glorot_uniform, seed
from .normalization import AdaptiveMeanPool, AvgPool, BatchNorm, Dropout, InstanceNorm

__all__ = ["AdaptiveMeanPool", "AvgPool", "BatchNorm", "Chain", "ClipFeatures", "Conv", "Dense",
           "Dropout", "FrameFeatures", "GlobalMeanPool", "InstanceNorm", "MaxPool", "Module",
           "Summary", "flatten", "glorot_uniform", "pooling_plan", "seed"]
