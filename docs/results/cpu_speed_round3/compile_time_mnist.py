"""Seconds of the first and of later MNIST training steps, batch 128: the first one compiles (or loads)
numba_blocks' kernels.

    NUMBA_CACHE_DIR=/tmp/nbcold-mnist .venv/bin/python docs/results/cpu_speed_round3/compile_time_mnist.py

from an empty cache folder, then again (the kernels from the cache), then with TINYFLUX_CPU_KERNELS=0.
"""
import time

import numpy as np

start = time.perf_counter()
import tinyflux as tf  # noqa: E402 (timed)
from tinyflux import optim  # noqa: E402

import_s = time.perf_counter() - start
tf.seed(0)
model = tf.models.mnist_convnet()
rng = np.random.default_rng(0)
x, y = rng.random((128, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 128)
step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=1e-3))
times = []
for _ in range(5):
    start = time.perf_counter()
    step(x, y)
    times.append(time.perf_counter() - start)
print(f"import tinyflux {import_s:.2f} s; first step {times[0]:.2f} s; later steps {1e3 * np.median(times[1:]):.1f} ms; "
      f"ops {type(tf.backends.cpu_ops()).__name__}")
