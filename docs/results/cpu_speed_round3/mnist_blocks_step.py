"""The MNIST training step three ways in the same rounds: tinyflux with the Numba kernels on (columns in
blocks, numba_blocks.py), tinyflux with them off (the NumPy columns), and PyTorch.

    /tmp/torchenv/bin/python docs/results/cpu_speed_round3/mnist_blocks_step.py [rounds] [batch]
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import torch
import tinyflux as tf
from tinyflux import optim
from tinyflux.models import mnist_convnet
from timing import torch_mnist_model, torch_training_step
B = int(sys.argv[2]) if len(sys.argv) > 2 else 128
rng = np.random.default_rng(0)
images = rng.uniform(0, 1, (B, 1, 28, 28)).astype(np.float32); labels = rng.integers(0, 10, B)
def make():
    tf.seed(0); model = mnist_convnet()
    return tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
s_on, s_off = make(), make()
torch.manual_seed(0); tm = torch_mnist_model("cpu")
ts = torch_training_step(tm, torch.optim.Adam(tm.parameters(), lr=3e-3), torch.tensor(images), torch.tensor(labels))
def on(): tf.modes.cpu_kernels = True; s_on(images, labels)
def off(): tf.modes.cpu_kernels = False; s_off(images, labels); tf.modes.cpu_kernels = True
def run(fn):
    fn(); time.sleep(0.3); t = time.perf_counter()
    for _ in range(5): fn()
    return (time.perf_counter() - t) / 5 * 1e3
res = {"blocks": [], "numpy": [], "torch": []}
fns = {"blocks": on, "numpy": off, "torch": ts}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 9):
    order = list(res) if r % 2 == 0 else list(res)[::-1]
    for k in order: res[k].append(run(fns[k]))
for k, v in res.items(): print(k, "min %.1f med %.1f max %.1f" % (min(v), statistics.median(v), max(v)))
for a, b in (("blocks", "torch"), ("numpy", "torch"), ("blocks", "numpy")):
    r = [x / y for x, y in zip(res[a], res[b])]
    print(f"{a}/{b} %.2f %.2f %.2f" % (min(r), statistics.median(r), max(r)))
