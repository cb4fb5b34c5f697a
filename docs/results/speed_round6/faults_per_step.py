"""Minor page faults and peak memory per own-clips training step at batch N, with NumPy's huge pages
on (1) or off (0: every fault is one 4 KiB page, so faults x 4 KiB is the fresh memory a step touches).

    python docs/results/speed_round6/faults_per_step.py 8 0
"""
import resource
import sys
import time

import numpy as np

import tinyflux as tf
from tinyflux import optim
from tinyflux.models import video_bn_net

np._core.multiarray._set_madvise_hugepage(sys.argv[2] == "1")
batch = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (batch, 3, 16, 112, 112)).astype(np.float32)
y = rng.integers(0, 4, batch)
tf.seed(0)
model = video_bn_net(3, 4)
opt = optim.Adam(model.parameters(), lr=3e-3)


def step():
    tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()
    opt.step()
    opt.zero_grad()


for _ in range(3):
    step()
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(f"step {1e3 * elapsed:.0f} ms, minor faults {after.ru_minflt - before.ru_minflt}, "
          f"peak memory {after.ru_maxrss // 1024} MB")
