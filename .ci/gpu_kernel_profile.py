"""GPU time per kernel in a tinyflux MNIST training step, eager and captured, on a machine with PyTorch.

PyTorch's profiler reads CUPTI, which records every kernel the process runs, CuPy's and
tinyflux's included, with its time on the GPU. A captured step's replay costs the CPU almost
nothing, so its time per step is the GPU time of these kernels: this says which ones to speed up.

    PYTHONPATH=. python .ci/gpu_kernel_profile.py
"""
import collections
import sys
import time

import numpy as np
from torch.profiler import ProfilerActivity, profile

import tinyflux as tf
from tinyflux import backends, optim
from tinyflux.models import mnist_convnet as mnist_model

STEPS = 20
cp = backends.array_module("cupy")


def kernel_table(run, title):
    """Run `run` STEPS times under the profiler; print GPU microseconds per step for each kernel."""
    for _ in range(3):
        run()
    cp.cuda.Device().synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            run()
        cp.cuda.Device().synchronize()
    totals, counts = collections.Counter(), collections.Counter()
    for event in prof.events():
        if str(event.device_type).endswith("CUDA"):
            duration = getattr(event, "device_time", None)
            if duration is None:
                duration = event.cuda_time
            totals[event.name[:90]] += duration
            counts[event.name[:90]] += 1
    start = time.perf_counter()
    for _ in range(STEPS):
        run()
    cp.cuda.Device().synchronize()
    wall = (time.perf_counter() - start) / STEPS * 1e6
    print(f"== {title}: {wall:.0f} us per step (wall), {sum(totals.values()) / STEPS:.0f} us of kernels per step "
          f"(GPU), {sum(counts.values()) / STEPS:.0f} kernels per step")
    for name, total in totals.most_common(25):
        print(f"{total / STEPS:9.1f} us  {counts[name] / STEPS:4.0f}x  {name}")
    sys.stdout.flush()


rng = np.random.default_rng(0)
x = cp.asarray(rng.random((128, 1, 28, 28), dtype=np.float32))
y = cp.asarray(rng.integers(0, 10, 128))

tf.seed(0)
model = tf.gpu(mnist_model())
opt = optim.Adam(model.parameters(), lr=3e-3)


train_step = tf.train.Step(model, tf.logit_cross_entropy, opt)


def eager_step():
    train_step(x, y)


kernel_table(eager_step, "eager step, own kernels and cuBLAS")
step = tf.capture(model, tf.logit_cross_entropy, opt, x, y)
kernel_table(lambda: step(x, y), "captured step (tf.capture)")
