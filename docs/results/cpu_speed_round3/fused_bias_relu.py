"""Measured, not taken: the bias and ReLU after each convolution-pooling of the MNIST step done inside that op,
on its contiguous pooled buffer (with the extra positions), instead of as a BiasReLU op on the strided view.

    TINYFLUX_CPU_KERNELS=0 .venv/bin/python docs/results/cpu_speed_round3/fused_bias_relu.py [rounds]

(With Numba's kernels on, the MNIST layers run numba_blocks, which does this fusion itself.)

Patches nn.Conv.forward_pooled for the run only; checks the parameters after 3 steps against the unpatched
model, then prints the step time of both ways and per-round ratios.
"""
import math
import statistics
import sys
import time

import numpy as np
import tinyflux as tf
from tinyflux import optim
from tinyflux.models import mnist_convnet
from tinyflux.functional import convolution as C
from tinyflux.nn import layers as L
import tinyflux.functional as F
from tinyflux.backends import ops_for

class ConvMaxPoolBiasReLU(C.ConvMaxPoolFunction):
    def forward(self, x, w, b):
        self.ops = ops = ops_for(x); self.w = w
        o = w.shape[0]; d = w.ndim - 2
        self.direct = False
        self.col, self.geometry = ops.im2col_pooled(x, tuple(w.shape[2:]), self.pad, self.window)
        self.col_mat = self.col.reshape(math.prod(w.shape[1:]), -1)
        y = ops.matmul(w.reshape(o, -1), self.col_mat)
        y = y.reshape((o,) + self.window + self.geometry.extended)
        pooled, self.passes = ops.maxpool_blocks(y, d)
        pooled += b.reshape((o,) + (1,) * (pooled.ndim - 1))
        np.maximum(pooled, 0, out=pooled)
        self.y_ext = pooled
        return pooled[C.pooled_inside(self.geometry)].transpose(C.pooled_to_batch_first(d))
    def backward(self, gy, needs):
        w, ops, geometry = self.w, self.ops, self.geometry
        o = w.shape[0]; d = w.ndim - 2
        gy_ext = np.empty((o,) + geometry.extended, dtype=gy.dtype)
        gy_ext[C.pooled_inside(self.geometry)] = gy.transpose((1, 2, 0) + tuple(range(3, d + 2)))
        for axis in range(3, gy_ext.ndim):
            gy_ext[C.index_along(axis, slice(geometry.pooled[axis - 2], None), gy_ext.ndim)] = 0
        gy_ext *= self.y_ext > 0
        gb = gy_ext.reshape(o, -1).sum(axis=1) if needs[2] else None
        gy_mat = ops.maxpool_blocks_backward(gy_ext, self.passes).reshape(o, -1)
        gx = gw = None
        if needs[0]:
            gcol = ops.matmul(w.reshape(o, -1).T, gy_mat)
            gx = ops.col2im_pooled(gcol.reshape(self.col.shape), geometry)
        if needs[1]:
            gw = ops.matmul(self.col_mat, gy_mat.T).T.reshape(w.shape)
        return gx, gw, gb

orig = L.Conv.forward_pooled
def fp(self, x, pool, plan):
    if plan == "one op" and self.activation is F.relu:
        return ConvMaxPoolBiasReLU(self.pad, pool.window).apply(x, self.weight, self.bias)
    return orig(self, x, pool, plan)

def make():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (128, 1, 28, 28)).astype(np.float32); labels = rng.integers(0, 10, 128)
    tf.seed(0); model = mnist_convnet()
    return model, tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3)), images, labels
ma, sa, x, y = make(); mb, sb, _, _ = make()
# check equality over 3 steps
L.Conv.forward_pooled = fp; sb(x, y); sb(x, y); sb(x, y)
L.Conv.forward_pooled = orig; sa(x, y); sa(x, y); sa(x, y)
print("max param diff", max(float(abs(p.data - q.data).max()) for p, q in zip(ma.parameters(), mb.parameters())))
res = {"base": [], "fused": []}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 15):
    for name, st in (("base", sa), ("fused", sb)):
        L.Conv.forward_pooled = fp if name == "fused" else orig
        st(x, y); time.sleep(0.3)
        t = time.perf_counter()
        for _ in range(5): st(x, y)
        res[name].append((time.perf_counter() - t) / 5 * 1e3)
for k, v in res.items(): print(k, "min %.1f med %.1f max %.1f" % (min(v), statistics.median(v), max(v)))
ratios = [a / b for a, b in zip(res["fused"], res["base"])]
print("fused/base %.3f %.3f %.3f" % (min(ratios), statistics.median(ratios), max(ratios)))
