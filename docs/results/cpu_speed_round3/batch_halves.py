"""Tried and not taken: each convolution-pooling of the MNIST step on the two halves of the batch at once,
on two Python threads with one BLAS thread each (NumPy releases the GIL in its copies and products).

    TINYFLUX_CPU_KERNELS=0 .venv/bin/python docs/results/cpu_speed_round3/batch_halves.py [rounds]

(The NumPy path: with Numba's kernels on, numba_blocks deals blocks out to threads itself.)

Patches ConvMaxPoolFunction for the run only; prints the step time of both ways, per round ratios.
"""
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

import tinyflux as tf
from tinyflux import optim
from tinyflux.backends.geometry import memory_order
from tinyflux.functional import convolution
from tinyflux.models import mnist_convnet

whole_forward, whole_backward = convolution.ConvMaxPoolFunction.forward, convolution.ConvMaxPoolFunction.backward
pool = ThreadPoolExecutor(1)


def forward_halves(self, x, w, b=None):
    n = x.shape[0]
    self.cuts = [0, n // 2, n]
    self.halves = [convolution.ConvMaxPoolFunction(self.pad, self.window) for _ in range(2)]
    self.x_order = memory_order(x)
    second = pool.submit(whole_forward, self.halves[1], x[n // 2:], w, b)
    outputs = [whole_forward(self.halves[0], x[:n // 2], w, b), second.result()]  # (N/2, O, U1, U2) views
    o, u1 = outputs[0].shape[1:3]
    whole = np.empty((o, u1, n) + outputs[0].shape[3:], dtype=x.dtype)  # (O, U1, N, U2), as the op lays it out
    for out, a, b in zip(outputs, self.cuts, self.cuts[1:]):
        whole[:, :, a:b] = out.transpose(1, 2, 0, 3)  # (N/2, O, U1, U2) -> (O, U1, N/2, U2)
    return whole.transpose(2, 0, 1, 3)  # (O, U1, N, U2) -> (N, O, U1, U2) view


def backward_halves(self, gy, needs):
    a, m, b = self.cuts
    second = pool.submit(whole_backward, self.halves[1], gy[m:b], needs)
    parts = [whole_backward(self.halves[0], gy[a:m], needs), second.result()]
    gx = gw = gb = None
    if len(needs) > 2 and needs[2]:
        gb = parts[0][2] + parts[1][2]
    if needs[0]:
        shape = (b,) + parts[0][0].shape[1:]
        order = self.x_order  # the gradient in the input's memory order, as col2im_pooled makes it
        gx = np.empty(tuple(shape[i] for i in order), dtype=gy.dtype).transpose(
            tuple(order.index(i) for i in range(len(order))))  # -> (N, C, H, W) view
        gx[a:m], gx[m:b] = parts[0][0], parts[1][0]
    if needs[1]:
        gw = parts[0][1] + parts[1][1]
    return (gx, gw) if len(needs) == 2 else (gx, gw, gb)


def patched(on: bool):
    convolution.ConvMaxPoolFunction.forward = forward_halves if on else whole_forward
    convolution.ConvMaxPoolFunction.backward = backward_halves if on else whole_backward


rng = np.random.default_rng(0)
images = rng.uniform(0, 1, (128, 1, 28, 28)).astype(np.float32)
labels = rng.integers(0, 10, 128)
tf.seed(0)
model = mnist_convnet()
step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
times = {"whole batch": [], "halves": []}
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 15):
    for name in times:
        patched(name == "halves")
        with threadpool_limits(1 if name == "halves" else None, "blas"):
            step(images, labels)
            time.sleep(0.3)
            start = time.perf_counter()
            for _ in range(5):
                step(images, labels)
            times[name].append((time.perf_counter() - start) / 5 * 1e3)
for name, values in times.items():
    print(f"{name}: {min(values):.1f} {statistics.median(values):.1f} {max(values):.1f} ms (min median max)")
ratios = [a / b for a, b in zip(times["halves"], times["whole batch"])]
print(f"halves / whole batch per round: {min(ratios):.2f} {statistics.median(ratios):.2f} {max(ratios):.2f}")
