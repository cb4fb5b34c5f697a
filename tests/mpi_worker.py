"""Jobs for tests/test_distributed.py, run as ``mpiexec -n 2 python -m mpi4py tests/mpi_worker.py JOB OUT``.

Each job writes what the test compares into OUT (a folder); nothing runs on import.
"""
import sys
from pathlib import Path

import numpy as np

import tinyflux as tf
from tinyflux import distributed, nn, optim

# global batches of 8, 8 and 5 examples: the last one is short and splits 2 / 3 between two ranks
BATCHES = [8, 8, 5]


def small_model(seed: int) -> nn.Chain:
    tf.seed(seed)
    return nn.Chain(nn.Conv((3, 3), 1, 4, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.flatten, nn.Dense(4 * 4 * 4, 5))


def data():
    rng = np.random.default_rng(7)
    return rng.random((sum(BATCHES), 1, 8, 8), dtype=np.float32), rng.integers(0, 5, sum(BATCHES))


def make_optimizer(name: str, params):
    return optim.Adam(params, lr=1e-2) if name == "adam" else optim.SGD(params, lr=0.1, momentum=0.9)


def train_steps(out: Path, optimizer: str = "adam") -> None:
    """Three data-parallel steps (Adam, or SGD with momentum); every rank saves its parameters."""
    comm = distributed.init()
    model = small_model(seed=100 + comm.rank)  # different on every rank until the broadcast
    distributed.broadcast_parameters(model, comm)
    step = tf.train.Step(model, tf.logit_cross_entropy, make_optimizer(optimizer, model.parameters()), comm)
    x, y = data()
    start = 0
    for size in BATCHES:  # each rank is handed the whole global batch and takes its own slice of it
        step(x[start:start + size], y[start:start + size])
        start += size
    distributed.check_same_parameters(model, comm)
    np.savez(out / f"rank{comm.rank}.npz", *[p.data for p in model.parameters()], t=step.optimizer.t,
             size=comm.size)


def broadcast(out: Path) -> None:
    """Parameters and the whole Adam state of rank 0 reach rank 1."""
    comm = distributed.init()
    model = small_model(seed=comm.rank)
    opt = optim.Adam(model.parameters(), lr=1e-3 * (comm.rank + 1), betas=(0.8 + 0.1 * comm.rank, 0.99))
    if comm.rank == 0:
        opt.m[0][...] = 3.0
        opt.t = 42
    distributed.broadcast_parameters(model, comm)
    distributed.broadcast_optimizer(opt, comm)
    np.savez(out / f"rank{comm.rank}.npz", *[p.data for p in model.parameters()], m0=opt.m[0], t=opt.t,
             lr=opt.lr, betas=opt.betas)


def disagree(out: Path) -> None:
    """A rank whose parameters drift is found by the check, on every rank."""
    comm = distributed.init()
    model = small_model(seed=0)
    if comm.rank == 1:
        model.parameters()[0].data[0, 0, 0, 0] += 1e-6
    try:
        distributed.check_same_parameters(model, comm)
    except RuntimeError as error:
        (out / f"rank{comm.rank}.txt").write_text(str(error))


def accuracy(out: Path) -> None:
    """tf.train.accuracy, each rank scoring its slice, against one process scoring all (on rank 0)."""
    from tinyflux.train import evaluate
    comm = distributed.init()
    tf.seed(3)
    model = tf.models.mnist_convnet()
    rng = np.random.default_rng(5)
    images, labels = rng.integers(0, 256, (37, 28, 28)).astype(np.uint8), rng.integers(0, 10, 37)
    scored = []  # how many images this rank scored, call by call
    real_predict = evaluate.predict
    evaluate.predict = lambda images, model: scored.append(len(images)) or real_predict(images, model)
    shared = evaluate.accuracy(images, labels, model, comm)
    alone = evaluate.accuracy(images, labels, model)
    np.savez(out / f"rank{comm.rank}.npz", shared=shared, alone=alone, scored=scored)


def fail(out: Path) -> None:
    """Rank 1 raises while rank 0 waits in an allreduce: -m mpi4py must end the job, not leave rank 0 waiting."""
    comm = distributed.init()
    if comm.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    comm.allreduce_sum(np.zeros(3, np.float32))
    (out / "rank0-finished.txt").write_text("the allreduce returned")


if __name__ == "__main__":
    job, folder, *options = sys.argv[1], Path(sys.argv[2]), *sys.argv[3:]
    {"train_steps": train_steps, "broadcast": broadcast, "disagree": disagree, "accuracy": accuracy,
     "fail": fail}[job](folder, *options)
