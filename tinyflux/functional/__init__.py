"""The math of tinyflux as plain functions on Tensors (the layers in ``nn`` call these)."""
from .activations import bias_relu, log_softmax, relu, softmax
from .basic import (add, div, exp, log, matmul, mean, mul, neg, pad, reshape, sub, sum, sum_to,
                    transpose)
from .convolution import col2im, conv, conv_maxpool, im2col, maxpool
from .dense import flatten, linear
from .normalization import (adaptive_avgpool, avgpool, batch_norm, batch_norm_pool,
                            instance_norm)
from .losses import logit_cross_entropy, onecold, onehot

__all__ = ["adaptive_avgpool", "add", "avgpool", "batch_norm", "batch_norm_pool", "bias_relu",
           "col2im", "conv", "conv_maxpool", "div", "exp", "flatten", "im2col", "instance_norm",
           "linear", "log", "log_softmax", "logit_cross_entropy", "matmul", "maxpool", "mean",
           "mul", "neg", "pad", "onecold", "onehot", "relu", "reshape", "softmax", "sub", "sum",
           "sum_to", "transpose"]
