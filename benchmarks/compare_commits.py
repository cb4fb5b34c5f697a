"""The training step of two commits of tinyflux, side by side: which one is faster, and by how much.

    python benchmarks/compare_commits.py 7753d8e            # that commit against the working tree
    python benchmarks/compare_commits.py 7753d8e HEAD --rounds 30
    python benchmarks/compare_commits.py 7753d8e --model own-clips --batch 8 --steps 1

Each side runs in its own worker process, importing tinyflux from its own
checkout (``git worktree``, removed at the end); the two take turns, round by
round, each going first in every other round, so that the noise of a shared machine hits both alike. Reported: ms per
step of each (min / median / max over rounds) and the per-round ratio
new / old. The model is the MNIST convnet, or ``--model own-clips``:
``video_bn_net`` on 3x16x112x112 clips (what ``examples/video_conv.py
--video-dir`` trains), or ``--model video``: ``video_convnet`` on colour
3x16x32x32 clips, 4 classes (the sweep's video3). Both sides train the same model from the same seed on the same
random batch; their BLAS thread count is whatever the environment gives both.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAUSE_S = 0.5  # between turns

# The worker: import tinyflux from the folder given (its working folder, and on PYTHONPATH), then time
# `steps` training steps per line read. The step is written out here rather than imported from conv_bench,
# because the worker runs in checkouts of older commits, whose benchmarks may differ.
WORKER = r"""
import sys, time
# an editable install of tinyflux would win over PYTHONPATH; drop its finder so the folder given is used
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]
import numpy as np
import tinyflux as tf
from tinyflux import optim
from tinyflux.models import mnist_convnet, video_bn_net, video_convnet
assert tf.__file__.startswith(sys.argv[1]), tf.__file__
batch, name = int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
build, shape, classes = {"own-clips": (lambda: video_bn_net(3, 4), (3, 16, 112, 112), 4),
                         "video": (lambda: video_convnet(3, 4), (3, 16, 32, 32), 4),
                         "mnist": (mnist_convnet, (1, 28, 28), 10)}[name]
x = rng.uniform(0, 1, (batch,) + shape).astype(np.float32)
y = rng.integers(0, classes, batch)
tf.seed(0)
model = build()
opt = optim.Adam(model.parameters(), lr=3e-3)
def step():
    tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()
    opt.step()
    opt.zero_grad()
for _ in range(3):
    step()
print("ready", flush=True)
for line in sys.stdin:
    steps = int(line)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print((time.perf_counter() - start) / steps, flush=True)
"""


def start_worker(tree: Path, batch: int, model: str) -> subprocess.Popen:
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(tree), str(batch), model], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    if worker.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the worker for {tree} did not start")
    return worker


def timed(worker: subprocess.Popen, steps: int) -> float:
    worker.stdin.write(f"{steps}\n")
    worker.stdin.flush()
    return float(worker.stdout.readline())


def summary(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"min": min(ms), "median": statistics.median(ms), "max": max(ms)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", help="the commit to compare against (anything git rev-parse takes)")
    p.add_argument("new", nargs="?", help="the other commit; default: the working tree as it is")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds per side")
    p.add_argument("--steps", type=int, default=5, help="training steps per round")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--model", choices=["mnist", "own-clips", "video"], default="mnist", help="the model whose step is timed")
    args = p.parse_args(argv)
    for flag in ("rounds", "steps", "batch"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    for rev in (args.old, args.new):
        if rev is not None and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                                               f"{rev}^{{commit}}"], capture_output=True).returncode != 0:
            p.error(f"{rev!r} is not a commit of the repository in {ROOT}")
    with tempfile.TemporaryDirectory() as scratch:
        trees, workers = {}, {}
        try:  # whatever fails, the workers end and the checkouts are removed from git's list again
            for name, rev in (("old", args.old), ("new", args.new)):
                if rev is None:
                    trees[name] = ROOT
                    continue
                tree = Path(scratch) / name
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), rev],
                               check=True)
                trees[name] = tree
            for name, tree in trees.items():
                workers[name] = start_worker(tree, args.batch, args.model)
            times = {"old": [], "new": []}
            for round_number in range(args.rounds):
                for name in (("old", "new") if round_number % 2 == 0 else ("new", "old")):
                    # OpenBLAS's threads spin for a while after a product before they sleep: let the other
                    # worker's threads fall asleep first, or they take a core from this round
                    time.sleep(PAUSE_S)
                    times[name].append(timed(workers[name], args.steps))
        finally:
            for worker in workers.values():
                worker.stdin.close()
                worker.wait()
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    ratios = [new / old for old, new in zip(times["old"], times["new"])]
    result = {"old": args.old, "new": args.new or "working tree", "model": args.model, "batch": args.batch, "rounds": args.rounds,
              "steps": args.steps, "old_ms": summary(times["old"]), "new_ms": summary(times["new"]),
              "ratio_new_old": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
