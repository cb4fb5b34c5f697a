"""Tried and not taken: the 3-D video model's layers on numba_blocks instead of the direct kernels.

    git apply docs/results/cpu_speed_round3/direct_or_blocks.patch
    .venv/bin/python docs/results/cpu_speed_round3/direct_or_blocks.py BATCH ROWS

ROWS is DIRECT_ROWS_BELOW: 100000 keeps every layer on the direct kernels, 128 the first layer only
(81 rows), 0 none. Prints the median ms per step of 12 rounds of 3 steps, each after a 0.2 s rest.
"""
import statistics
import sys
import time

import numpy as np
import tinyflux as tf
from tinyflux import optim
from tinyflux.backends import numba_ops
numba_ops.DIRECT_ROWS_BELOW = int(sys.argv[2])
rng = np.random.default_rng(0)
B = int(sys.argv[1])
x = rng.uniform(0, 1, (B, 3, 16, 32, 32)).astype(np.float32); y = rng.integers(0, 4, B)
tf.seed(0); model = tf.models.video_convnet(3, 4, 16, (32, 32))
step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
for _ in range(3): step(x, y)
ts = []
for _ in range(12):
    time.sleep(0.2); s = time.perf_counter(); step(x, y); step(x, y); step(x, y); ts.append((time.perf_counter() - s) / 3)
print(f"{statistics.median(ts)*1e3:.1f}")
