"""The MNIST training step at batch 128 on one thread and on two, tinyflux beside PyTorch, in the same rounds.

    /tmp/torchenv/bin/python docs/results/cpu_speed_round3/thread_scaling.py [rounds]

One thread: OpenBLAS limited to 1 (threadpoolctl), tinyflux's Numba kernels to 1 (its ops' limit_threads,
where Numba is installed) and torch.set_num_threads(1); two: all at 2. TINYFLUX_CPU_KERNELS=0 measures
the NumPy path.
Each round times 5 steps of each of the four after a rest of 0.3 s (OpenBLAS's spin), alternating
which library goes first. Prints ms per step (min / median / max) and per-round ratios.
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import tinyflux as tf  # noqa: E402
from tinyflux import optim  # noqa: E402
from tinyflux.models import mnist_convnet  # noqa: E402
from timing import torch_mnist_model, torch_training_step  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
rng = np.random.default_rng(0)
images = rng.uniform(0, 1, (128, 1, 28, 28)).astype(np.float32)
labels = rng.integers(0, 10, 128)
tf.seed(0)
model = mnist_convnet()
ours = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
torch.manual_seed(0)
torch_model = torch_mnist_model("cpu")
theirs = torch_training_step(torch_model, torch.optim.Adam(torch_model.parameters(), lr=3e-3),
                             torch.tensor(images), torch.tensor(labels))
steps = {"tinyflux": lambda: ours(images, labels), "torch": theirs}


def timed(step) -> float:
    step()
    time.sleep(0.3)
    start = time.perf_counter()
    for _ in range(5):
        step()
    return (time.perf_counter() - start) / 5 * 1e3


times = {(name, threads): [] for threads in (1, 2) for name in steps}
for i in range(rounds):
    for threads in (1, 2):
        torch.set_num_threads(threads)
        tf.backends.cpu_ops().limit_threads(threads)
        with threadpool_limits(threads, "blas"):
            for name in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
                times[name, threads].append(timed(steps[name]))
blas = [(lib["internal_api"], lib["version"], lib["architecture"]) for lib in threadpool_info()
        if lib["user_api"] == "blas"]
print(f"BLAS {blas}; PyTorch {torch.__version__}; {rounds} rounds of 5 steps, batch 128")


def spread(values) -> str:
    return f"{min(values):6.2f} {statistics.median(values):6.2f} {max(values):6.2f}"


for (name, threads), values in times.items():
    print(f"{name:9} {threads} thread{'s' * (threads > 1)}: {spread(values)} ms")
for threads in (1, 2):
    ratios = [a / b for a, b in zip(times["tinyflux", threads], times["torch", threads])]
    print(f"tinyflux / PyTorch, {threads} thread{'s' * (threads > 1)}: {spread(ratios)}")
for name in steps:
    gains = [a / b for a, b in zip(times[name, 1], times[name, 2])]
    print(f"{name} speed-up from the second thread (1-thread time / 2-thread time): {spread(gains)}")
