"""Where PyTorch's MNIST training step (batch 128, CPU) spends its time: torch.profiler over 20 steps.

    /tmp/torchenv/bin/python docs/results/cpu_speed_round3/torch_profile.py
"""
from pathlib import Path
import sys
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import torch, numpy as np
from timing import torch_mnist_model, torch_training_step
torch.manual_seed(0)
m = torch_mnist_model("cpu")
rng = np.random.default_rng(0)
x = torch.tensor(rng.uniform(0, 1, (128, 1, 28, 28)).astype(np.float32)); y = torch.tensor(rng.integers(0, 10, 128))
step = torch_training_step(m, torch.optim.Adam(m.parameters(), lr=3e-3), x, y)
for _ in range(5): step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(20): step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
