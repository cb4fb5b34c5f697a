"""tinyflux.distributed: two MPI ranks (mpiexec -n 2, MPICH from the mpich wheel) against one process.

Each test starts a real 2-rank job of tests/mpi_worker.py and compares what the ranks saved with a
one-process computation. BLAS runs single-threaded in both, so that the sums inside each matrix
product happen in the same order and "bit for bit" can be asked of them.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyflux as tf
from tinyflux import distributed, optim

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'tinyflux[mpi]' mpich)")
MPIEXEC = Path(sys.executable).parent / "mpiexec"
if not MPIEXEC.exists():
    pytest.skip("no mpiexec next to this Python (pip install mpich)", allow_module_level=True)

HERE = Path(__file__).resolve().parent
import mpi_worker as worker  # noqa: E402  (pytest puts tests/ on the path, as it does for conftest)

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def mpirun(job, out, *options, ranks=2, timeout=120):
    """Run ``job`` of mpi_worker.py on ``ranks`` ranks; returns the finished process."""
    out.mkdir(exist_ok=True)
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "mpi4py", str(HERE / "mpi_worker.py"), job,
               str(out), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ONE_THREAD})


@pytest.fixture
def one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


def gradients(model, x, y):
    """The flat gradient of the mean loss on (x, y), and its parameters' shapes."""
    model_params = model.parameters()
    for p in model_params:
        p.grad = None
    tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()
    return np.concatenate([p.grad.reshape(-1) for p in model_params])


def reference_steps(half_batches: bool, optimizer: str = "adam"):
    """The same three steps in one process: either the weighted sum of the two halves' gradients,
    computed as DataParallel does it, or one gradient of each whole batch."""
    model = worker.small_model(seed=100)  # rank 0's model, which the broadcast gives everyone
    opt = worker.make_optimizer(optimizer, model.parameters())
    x, y = worker.data()
    start = 0
    for size in worker.BATCHES:
        bx, by = x[start:start + size], y[start:start + size]
        if half_batches:
            total = np.zeros(sum(p.size for p in model.parameters()), np.float32)
            for rank in range(2):
                part = distributed.shard(size, distributed._Fake(rank, 2))
                total += gradients(model, bx[part], by[part]) * np.float32(len(by[part]))
            total /= np.float32(size)
        else:
            total = gradients(model, bx, by)
        offset = 0
        for p in model.parameters():
            p.grad = total[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        opt.step()
        start += size
    return [p.data for p in model.parameters()]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_two_ranks_equal_the_one_process_sum_of_half_batch_gradients(tmp_path, one_blas_thread, optimizer):
    done = mpirun("train_steps", tmp_path, optimizer)
    assert done.returncode == 0, done.stderr
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert int(ranks[0]["size"]) == 2 and int(ranks[0]["t"]) == 3
    arrays = [[rank[f"arr_{i}"] for i in range(4)] for rank in ranks]
    for a, b in zip(*arrays):
        assert np.array_equal(a, b)  # the ranks agree exactly
    for mine, expected in zip(arrays[0], reference_steps(True, optimizer)):
        assert mine.dtype == expected.dtype and np.array_equal(mine, expected)  # bit for bit
    for mine, expected in zip(arrays[0], reference_steps(False, optimizer)):
        assert np.allclose(mine, expected, rtol=0, atol=1e-6)  # a plain batch: float32 rounding apart


def test_sharded_accuracy_equals_the_one_process_accuracy(tmp_path):
    done = mpirun("accuracy", tmp_path)  # 37 images: slices of 18 and 19
    assert done.returncode == 0, done.stderr
    for rank, (slice_size, whole) in enumerate([(18, 37), (19, 37)]):
        result = np.load(tmp_path / f"rank{rank}.npz")
        assert float(result["shared"]) == float(result["alone"])
        assert result["scored"].tolist() == [slice_size, whole]  # its slice, then (alone) all of them


def test_broadcast_gives_every_rank_rank_0s_model_and_optimizer(tmp_path):
    done = mpirun("broadcast", tmp_path)
    assert done.returncode == 0, done.stderr
    zero, one = (np.load(tmp_path / f"rank{r}.npz") for r in range(2))
    assert all(np.array_equal(zero[f"arr_{i}"], one[f"arr_{i}"]) for i in range(4))
    assert np.all(one["m0"] == 3.0) and int(one["t"]) == 42 and float(one["lr"]) == 1e-3
    assert one["betas"].tolist() == [0.8, 0.99]
    assert not np.array_equal(zero["arr_0"], worker.small_model(seed=1).parameters()[0].data)  # it did change


def test_ranks_whose_parameters_differ_are_found_on_every_rank(tmp_path):
    done = mpirun("disagree", tmp_path)
    assert done.returncode == 0, done.stderr
    for rank in range(2):
        assert "the ranks' parameters differ: ranks [0] hold" in (tmp_path / f"rank{rank}.txt").read_text()


def test_a_rank_that_raises_ends_the_whole_job(tmp_path):
    """The other rank is waiting in an allreduce that can never complete: without -m mpi4py it would wait
    forever. The subprocess timeout only keeps a regression from hanging the suite."""
    done = mpirun("fail", tmp_path)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    assert not (tmp_path / "rank0-finished.txt").exists()


def test_the_one_process_stand_in_runs_the_same_code_without_mpi(tmp_path, one_blas_thread):
    done = subprocess.run([sys.executable, str(HERE / "mpi_worker.py"), "train_steps", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, done.stderr
    alone = np.load(tmp_path / "rank0.npz")
    assert int(alone["size"]) == 1
    # one rank with the whole batch: DataParallel is the plain optimizer, up to the n * g / n rounding
    for mine, expected in zip([alone[f"arr_{i}"] for i in range(4)], reference_steps(half_batches=False)):
        assert np.allclose(mine, expected, rtol=0, atol=1e-6)


def test_shards_cover_every_example_once():
    for count in (0, 1, 5, 128):
        for size in (1, 2, 3, 4):
            parts = [distributed.shard(count, distributed._Fake(r, size)) for r in range(size)]
            covered = np.concatenate([np.arange(count)[p] for p in parts])
            assert covered.tolist() == list(range(count))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_a_step_without_any_example_anywhere_is_refused():
    opt = distributed.DataParallel(optim.SGD(worker.small_model(0).parameters()), distributed.Communicator())
    with pytest.raises(ValueError, match="no rank had any examples"):
        opt.step(examples=0)


# -- the example: mpiexec -n 2 python -m mpi4py examples/mnist_conv.py --distributed ---------------------------
def run_command(command, timeout=300):
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ONE_THREAD})
    return done.returncode, done.stdout + done.stderr


def two_ranks():
    return (MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py")


def history(log: str, name: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in log.splitlines() if name in line]


FLAGS = ("--epochs", "2", "--batch-size", "32", "--max-steps", "6", "--device", "cpu")


def test_the_example_on_two_ranks_follows_the_one_process_run(example_command, tmp_path):
    status, alone = run_command(example_command(*FLAGS, "--savepath", tmp_path / "one"))
    assert status == 0, alone
    status, shared = run_command(example_command(*FLAGS, "--distributed", "--savepath", tmp_path / "two",
                                                 python=two_ranks()))
    assert status == 0, shared
    for name in ("mean training loss", "Test accuracy:"):
        ours, theirs = history(shared, name), history(alone, name)
        assert len(ours) == len(theirs) == 2 and np.allclose(ours, theirs, rtol=0, atol=2e-4), (ours, theirs)
    assert shared.count("[1]: Test accuracy") == 1 and shared.count("accuracy(test_set, model)") == 1  # one log
    assert sorted(os.listdir(tmp_path / "two")) == ["mnist_conv.h5", "mnist_conv.state.h5"]  # rank 0's files
    one = tf.checkpoint.read_metadata(tmp_path / "one" / "mnist_conv.state.h5")
    two = tf.checkpoint.read_metadata(tmp_path / "two" / "mnist_conv.state.h5")
    assert one["epoch"] == two["epoch"] == 2 and one["noise_state"] == two["noise_state"]  # the same noise drawn


def test_a_distributed_run_resumes_exactly(example_command, tmp_path):
    status, log = run_command(example_command(*FLAGS, "--distributed", "--savepath", tmp_path / "whole",
                                              python=two_ranks()))
    assert status == 0, log
    first = [f if f != "2" else "1" for f in FLAGS]  # one epoch, then resume to two
    status, log = run_command(example_command(*first, "--distributed", "--savepath", tmp_path / "parts",
                                              python=two_ranks()))
    assert status == 0, log
    status, log = run_command(example_command(*FLAGS, "--distributed", "--resume", "--savepath",
                                              tmp_path / "parts", python=two_ranks()))
    assert status == 0 and "Resuming the run in" in log, log
    for name in ("mnist_conv.h5", "mnist_conv.state.h5"):
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_ranks_started_without_distributed_are_told(example_command, tmp_path):
    status, log = run_command(example_command(*FLAGS, "--savepath", tmp_path / "run", python=two_ranks()))
    assert status != 0 and "started as one of 2 ranks by mpiexec, but without --distributed" in log
    assert not (tmp_path / "run").exists()


def test_a_refused_run_folder_ends_every_rank(example_command, tmp_path):
    """Rank 0 refuses the folder (it holds a run) while rank 1 waits for its word: the job must end."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mnist_conv.h5").write_bytes(b"an earlier run's model")
    status, log = run_command(example_command(*FLAGS, "--distributed", "--savepath", tmp_path / "run",
                                              python=two_ranks()))
    assert status == 2 and "already holds an earlier run" in log, log
    assert (tmp_path / "run" / "mnist_conv.h5").read_bytes() == b"an earlier run's model"


def test_ctrl_c_to_mpiexec_ends_with_the_one_line_message(example_command, tmp_path):
    """Before: exit 130 without the "Interrupted: ... --resume" line a one-process run prints."""
    import signal
    command = [str(c) for c in example_command("--epochs", "3", "--batch-size", "32", "--device", "cpu",
                                               "--distributed", "--savepath", tmp_path / "run", python=two_ranks())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **ONE_THREAD})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "[1]: Test accuracy" in line:
            process.send_signal(signal.SIGINT)
            break
    out = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 130, out
    message = [line for line in out.splitlines() if "Interrupted:" in line]
    assert len(message) == 1 and "the run is saved after epoch" in message[0], out
    assert "To continue it: mpiexec -n 2 python -m mpi4py " in message[0] and message[0].endswith("--resume"), out
