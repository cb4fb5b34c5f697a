"""Data parallelism on one machine: the MNIST step as 2 MPI ranks x 1 BLAS thread against 1 process x 2 threads,
and PyTorch's step in a process of its own, each in a launch of its own, the order alternating by round.

Run through ``python benchmarks/conv_bench.py --distributed``; this file is also the
worker each launch runs (``--worker`` for tinyflux, ``--torch-worker`` for PyTorch).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

import tinyflux as tf
from tinyflux import optim
from tinyflux.models import mnist_convnet as mnist_model
from timing import (blas_info, format_ms, summary, summary_ratio, timed_steps, torch, torch_mnist_model,
                    torch_training_step)

def distributed_worker(steps: int, batch: int = 128) -> dict:
    """Time ``steps`` MNIST training steps at global batch ``batch``: as one process, or as this rank of an MPI
    job (started by --distributed) with a DataParallel Adam over this rank's slice. Rank 0 returns the times."""
    from tinyflux import distributed
    comm = distributed.init()
    tf.seed(0)
    model = mnist_model()
    step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=1e-3), comm)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    times = timed_steps(lambda: step(x, y), steps)  # each rank takes its slice of the whole batch
    flat = np.zeros(sum(p.size for p in model.parameters()) + 1, np.float32)  # the gradients and the count
    allreduce = []
    for _ in range(50):
        start = time.perf_counter()
        comm.allreduce_sum(flat)
        allreduce.append(time.perf_counter() - start)
    return {"ranks": comm.size, "blas": blas_info(), "step_s": times, "allreduce_s": allreduce}


def torch_worker(steps: int, batch: int = 128) -> dict:
    """Time ``steps`` PyTorch MNIST training steps in this process (a launch of --distributed)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    model = torch_mnist_model("cpu")
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((batch, 1, 28, 28), dtype=np.float32))
    y = torch.tensor(rng.integers(0, 10, batch))
    times = timed_steps(torch_training_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y), steps)
    return {"blas": f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads", "step_s": times}


def measure_distributed(rounds: int, steps: int) -> dict:
    """Per round, one launch of each: ``mpiexec -n 2`` ranks of one BLAS thread, and one process of two
    threads; the order alternates. Each launch reports its mean step time; the ratio is taken per round."""
    import subprocess
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    script = os.path.abspath(__file__)
    worker = [sys.executable, "-m", "mpi4py", script, "--worker", str(steps)]
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    two_threads = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    launches = {"2 ranks x 1 thread": ([mpiexec, "-n", "2", *worker], one_thread),
                "1 process x 2 threads": ([sys.executable, script, "--worker", str(steps)], two_threads)}
    if torch is not None:  # PyTorch as a launch of its own too: the same step on the same 2 cores
        launches["PyTorch, 1 process x 2 threads"] = (
            [sys.executable, script, "--torch-worker", str(steps)], two_threads)
    means = {name: [] for name in launches}
    reports = {}
    for r in range(rounds):  # the order of the launches alternates from round to round
        for name in (list(launches) if r % 2 == 0 else list(launches)[::-1]):
            command, env = launches[name]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            reports[name] = json.loads(done.stdout.strip().splitlines()[-1])
            means[name].append(statistics.mean(reports[name]["step_s"]))
    ours, theirs = means["2 ranks x 1 thread"], means["1 process x 2 threads"]
    ratios = {}
    if "PyTorch, 1 process x 2 threads" in means:
        pytorch = means["PyTorch, 1 process x 2 threads"]
        ratios = {"ratio_ranks_to_torch": summary_ratio(ours, pytorch),
                  "ratio_process_to_torch": summary_ratio(theirs, pytorch)}
    return {name: summary(values) for name, values in means.items()} | ratios | {
        "ratio": summary_ratio(ours, theirs),
        "allreduce_us": {k: v * 1e3 for k, v in summary(reports["2 ranks x 1 thread"]["allreduce_s"]).items()},
        "blas": {name: report["blas"] for name, report in reports.items()},
        "rounds": rounds, "steps": steps}


def print_distributed(result: dict) -> None:
    print(f"MNIST training step, global batch 128, {result['rounds']} rounds of {result['steps']} steps "
          "(mean per launch; min / median / max over rounds):")
    for name in ("2 ranks x 1 thread", "1 process x 2 threads", "PyTorch, 1 process x 2 threads"):
        if name in result:
            print(f"  {name:32} {format_ms(result[name])}")
    for key, label in (("ratio", "2 ranks / 1 process"), ("ratio_ranks_to_torch", "2 ranks / PyTorch"),
                       ("ratio_process_to_torch", "1 process / PyTorch")):
        if key in result:
            r = result[key]
            print(f"  ratio {label}, per round: {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f}")
    a = result["allreduce_us"]
    print(f"  allreduce of the 16,939 float32 (gradients and count), 2 ranks: "
          f"{a['min']:.0f} / {a['median']:.0f} / {a['max']:.0f} us")
    for name, blas in result["blas"].items():
        print(f"  BLAS, {name}: {blas}")


if __name__ == "__main__":  # one launch of measure_distributed: its result as the last line of output
    role, count = sys.argv[1], int(sys.argv[2])
    if role == "--torch-worker":
        print(json.dumps(torch_worker(count)))
    else:
        report = distributed_worker(count)
        if tf.distributed.init().rank == 0:
            print(json.dumps(report))
