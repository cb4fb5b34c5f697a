"""Logit cross-entropy, one-hot encoding and its inverse.

For scores (logits) x of one example and its true class c, the cross-entropy
of the softmax probabilities is

    loss = -log p_c = -(x_c - log sum_j exp(x_j))          (log-sum-exp form)

Working on logits rather than on probabilities is what makes it safe: the
log-sum-exp subtracts the maximum score first, so logits of +-1e4 in float32
give a finite loss where log(softmax(x)) would give log(0) = -inf.
Its gradient is remarkably simple: dloss/dx = softmax(x) - onehot(c). The
batch loss is the mean over the N examples, so each row is also divided by N.
"""
from __future__ import annotations

import numpy as np

from ..backends import get_array_module, has_float64, to_cpu_array
from ..modes import modes
from ..tensor import Function, Tensor
from .activations import log_softmax_array


def _labels_as_onehot(labels, num_classes: int, n: int, xp, dtype, where: str):
    """Validate labels (ints (N,) or one-hot (N, classes)) and return one-hot (N, classes)."""
    if isinstance(labels, Tensor):
        labels = labels.data
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    labels = xp.asarray(labels)
    if labels.ndim == 1:
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{where}: integer class labels expected, got dtype {labels.dtype} "
                            "(pass ints of shape (N,) or one-hot floats of shape (N, classes))")
        if labels.shape[0] != n:
            raise ValueError(f"{where}: {n} rows of scores but {labels.shape[0]} labels")
        # The range check reads the smallest and the largest label back from the GPU in one copy
        # (one wait for the GPU per step, not two). A graph capture forbids even that;
        # tinyflux.cuda_graph checks labels on the host instead, before they are copied in.
        if labels.size and not modes.capture:
            low, high = xp.stack([labels.min(), labels.max()]).tolist()
            if low < 0 or high >= num_classes:
                raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1}, got "
                                 f"values from {low} to {high}")
        # row i is 1 where the class index equals label i: (1, classes) ==
        # (N, 1) broadcasts to (N, classes). A single element-wise kernel
        # on a GPU: the plainest kind of work for a CUDA graph to record.
        return (xp.arange(num_classes)[None, :] == labels[:, None]).astype(dtype)
    if labels.ndim == 2:
        if labels.shape != (n, num_classes):
            raise ValueError(f"{where}: one-hot labels of shape {(n, num_classes)} "
                             f"expected, got {labels.shape}")
        if labels.dtype.kind not in "iuf":
            raise TypeError(f"{where}: one-hot labels must be numbers, got dtype {labels.dtype}")
        # Each row must be a probability distribution: one 1 and zeros, or soft labels summing to 1.
        # Like the range check above, this reads back from the GPU, so a capture skips it.
        if labels.size and not modes.capture:
            # float32 where MPS has no more
            rows = labels.astype(np.float64 if has_float64(labels) else np.float32)
            if not bool(xp.isfinite(rows).all()) or float(rows.min()) < 0 or \
                    float(xp.abs(rows.sum(axis=1) - 1).max()) > 1e-3:
                bad = int(xp.argmax(~xp.isfinite(rows).all(axis=1) | (rows.min(axis=1) < 0) |
                                    (xp.abs(rows.sum(axis=1) - 1) > 1e-3)))
                raise ValueError(f"{where}: one-hot labels must be rows of non-negative numbers "
                                 f"that sum to 1; row {bad} is "
                                 f"{to_cpu_array(labels[bad]).tolist()}")
        return labels.astype(dtype, copy=False)
    raise ValueError(f"{where}: labels must have shape (N,) or (N, classes), got {labels.shape}")


class LogitCrossEntropy(Function):
    def __init__(self, labels):
        self.labels = labels

    def forward(self, x):
        where = "logit_cross_entropy"
        if x.ndim != 2:
            raise ValueError(f"{where}: expected scores of shape (N, classes), got {x.shape}")
        n, num_classes = x.shape
        if n == 0:
            raise ValueError(f"{where}: empty batch (scores of shape {x.shape})")
        xp = get_array_module(x)
        self.target = _labels_as_onehot(self.labels, num_classes, n, xp, x.dtype, where)
        self.logp = log_softmax_array(x, axis=1)  # (N, classes)
        # Where the target is 0 the term is 0, even where logp is -inf
        # (logits so far apart that their difference overflows): 0 * -inf
        # would be NaN, and one NaN term would make the whole loss NaN.
        return -xp.where(self.target != 0, self.target * self.logp, 0).sum() / n

    def backward(self, gy, needs):
        xp = get_array_module(gy)
        n = self.logp.shape[0]
        return ((xp.exp(self.logp) - self.target) * (gy / n),)


def logit_cross_entropy(scores: Tensor, labels) -> Tensor:
    """Mean cross-entropy of softmax(scores) against the labels.

    Args:
        scores: (N, classes) unnormalised log-probabilities (the model's output).
        labels: ints of shape (N,) in 0..classes-1, or one-hot floats (N, classes).

    Returns:
        a scalar Tensor.

    >>> import tinyflux as tf, numpy as np
    >>> loss = tf.logit_cross_entropy(tf.Tensor(np.zeros((2, 4))), np.array([0, 3]))
    >>> round(loss.item(), 4)  # log(4)
    1.3863
    """
    return LogitCrossEntropy(labels).apply(scores)


def onehot(labels, num_classes: int):
    """Ints (N,) -> float32 array (N, num_classes) with a single 1 per row."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    xp = get_array_module(labels)
    labels = xp.asarray(labels)
    return _labels_as_onehot(labels, num_classes, labels.shape[0] if labels.ndim else 0, xp,
                             np.float32, "onehot")


def onecold(scores):
    """The inverse of onehot: the index of the largest score in each row, (N, classes) -> (N,)."""
    scores = scores.data if isinstance(scores, Tensor) else scores
    if getattr(scores, "ndim", None) != 2:
        raise ValueError(f"onecold: expected scores of shape (N, classes), got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    return scores.argmax(axis=1)
