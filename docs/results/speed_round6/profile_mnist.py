"""The MNIST step's profile (benchmarks/profile_bench.py) at batch N, 30 steps.

    python docs/results/speed_round6/profile_mnist.py 32
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import numpy as np  # noqa: E402
from profile_bench import print_profile, profile_training_step  # noqa: E402
from timing import Timer  # noqa: E402

profile = profile_training_step(np, Timer(lambda: None, 0.1), steps=30, batch=int(sys.argv[1]), model_name="MNIST")
profile["sgemm_gflops"] = float("nan")
print_profile(profile, "numpy")
