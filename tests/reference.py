"""Naive nested-loop references: slow and obviously right, for tiny shapes only."""
import itertools

import numpy as np


def conv_reference(x, w, b, stride, pad):
    """y[n, o, q] = b[o] + sum_{c, k} w[o, c, k] * x_padded[n, c, q*stride + k], any number of spatial axes."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    n, c = x.shape[:2]
    o = w.shape[0]
    kernel = w.shape[2:]
    d = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(padded.shape[2 + i] - kernel[i]) // stride[i] + 1 for i in range(d)]
    y = np.zeros((n, o, *out))
    for ni, oi in itertools.product(range(n), range(o)):
        for q in itertools.product(*(range(s) for s in out)):
            total = 0.0 if b is None else float(b[oi])
            for ci in range(c):
                for k in itertools.product(*(range(s) for s in kernel)):
                    pos = tuple(q[i] * stride[i] + k[i] for i in range(d))
                    total += w[(oi, ci) + k] * padded[(ni, ci) + pos]
            y[(ni, oi) + q] = total
    return y


def maxpool_reference(x, window, stride):
    """The largest value of each window, and the gradient of sum(y * gy) (first maximum wins ties)."""
    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape[:2]
    d = len(window)
    out = [(x.shape[2 + i] - window[i]) // stride[i] + 1 for i in range(d)]
    y = np.zeros((n, c, *out))
    argmax = {}
    for ni, ci in itertools.product(range(n), range(c)):
        for q in itertools.product(*(range(s) for s in out)):
            best, where = -np.inf, None
            for k in itertools.product(*(range(s) for s in window)):
                pos = tuple(q[i] * stride[i] + k[i] for i in range(d))
                if where is None or x[(ni, ci) + pos] > best:
                    best, where = x[(ni, ci) + pos], pos
            y[(ni, ci) + q] = best
            argmax[(ni, ci) + q] = (ni, ci) + where
    return y, argmax
