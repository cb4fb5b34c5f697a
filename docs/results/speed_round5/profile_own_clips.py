"""The own-clips step's profile (benchmarks/profile_bench.py) of the tinyflux on PYTHONPATH."""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]
sys.path.insert(0, sys.argv[1])
import numpy as np
from timing import Timer
from profile_bench import profile_training_step, print_profile
import tinyflux
print("tinyflux from", tinyflux.__file__)
p = profile_training_step(np, Timer(lambda: None, 0.1), steps=10, batch=int(sys.argv[2]), model_name="own clips")
p["sgemm_gflops"] = float("nan")
print_profile(p, "numpy")
