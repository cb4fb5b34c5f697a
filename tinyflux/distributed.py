"""Data-parallel training over several processes: MPI (mpi4py) between them, NCCL between GPUs.

Every process ("rank") holds the whole model. A global batch of B examples
is cut into one slice per rank; each rank computes the gradient of the mean
loss over its own slice, L_r, on its own n_r examples. The loss of the
whole batch is the mean over all B examples, which is a weighted sum of the
ranks' means:

    L = (1/B) sum_i l_i = sum_r (n_r / B) L_r,   so   grad L = sum_r (n_r / B) grad L_r

So each rank scales its gradient by n_r and one *allreduce* (every rank
sends its array and receives the sum over all ranks) gives every rank
sum_r n_r grad L_r; dividing by B = sum_r n_r gives the gradient of the
whole batch. Every rank then takes the same optimizer step on the same
parameters, and the ranks stay identical without ever sending weights. The
global batch, and so the learning rate and the schedule, are those of a
one-process run: more ranks only split the work of each step.

What travels per step is one flat array of all the gradients (16,938
float32 numbers, 68 kB, for the MNIST model) plus the count n_r, in one
allreduce, whatever the number of parameters.

    comm = tinyflux.distributed.init()           # rank, size; a one-process stand-in without MPI
    tinyflux.distributed.broadcast_parameters(model, comm)
    opt = tinyflux.distributed.DataParallel(optim.Adam(model.parameters()), comm)
    ...
    loss.backward()
    opt.step(examples=len(x))                    # this rank's share of the global batch

Start the ranks with ``mpiexec -n 2 python -m mpi4py script.py``: ``-m mpi4py``
makes an exception in any rank end the whole job (MPI_Abort) instead of
leaving the others waiting forever in their next allreduce. mpi4py is
imported only by :func:`init`; nothing else in tinyflux needs it.

GPUs: each rank uses the GPU numbered by its rank on its machine. When CuPy
finds NCCL (``cupy.cuda.nccl.available``) the allreduce runs GPU to GPU;
otherwise the gradient goes through the host and MPI.
"""
from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from . import backends
from .backends import array_module, backend_name, get_array_module, is_gpu_array, to_cpu_array
from .backends.arrays import nccl

log = logging.getLogger("tinyflux.distributed")


class Communicator:
    """The ranks of a job, and the few collective operations data parallelism needs.

    This base class is the one-process stand-in: rank 0 of 1, every collective
    a no-op, so a training loop written for several ranks runs unchanged alone.
    """

    rank = 0
    size = 1
    local_rank = 0  # the rank among the processes on this machine: which GPU to use
    local_size = 1

    def allreduce_sum(self, array):
        """Replace ``array`` (NumPy or CuPy) by its sum over all ranks, in place; return it."""
        return array

    def broadcast(self, array, root: int = 0):
        """Replace ``array`` on every rank by root's, in place; return it."""
        return array

    def broadcast_object(self, value, root: int = 0):
        """Root's ``value`` (any picklable Python object) on every rank."""
        return value

    def allgather_object(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        return [value]

    def abort(self, code: int = 1) -> None:
        """End every rank of the job at once (after an error that the others cannot know about)."""
        raise SystemExit(code)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rank={self.rank}, size={self.size}, "
                f"local_rank={self.local_rank})")


class MPICommunicator(Communicator):
    """Communicator over mpi4py's ``COMM_WORLD`` (and NCCL for CuPy arrays, when available)."""

    def __init__(self, comm):
        from mpi4py import MPI
        self._MPI = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks that share this machine's memory
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._nccl = None  # made on first use with a GPU array

    def _nccl_communicator(self):
        """An NCCL communicator between the ranks' GPUs,
        or None (then GPU arrays go through the host)."""
        if self._nccl is None:
            self._nccl = False
            bindings = nccl()
            if bindings is None:
                log.warning("NCCL unavailable (pip install 'tinyflux[nccl12]'): GPU "
                            "gradients go through the host")
            else:
                uid = self.broadcast_object(bindings.get_unique_id() if self.rank == 0 else None)
                self._nccl = bindings.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl or None

    def allreduce_sum(self, array):
        if is_gpu_array(array):
            nccl_comm = self._nccl_communicator()
            if nccl_comm is not None:
                bindings, cp = nccl(), array_module("cupy")
                kind = {np.dtype(np.float32): bindings.NCCL_FLOAT32,
                        np.dtype(np.float64): bindings.NCCL_FLOAT64}
                nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size, kind[array.dtype],
                                    bindings.NCCL_SUM, cp.cuda.get_current_stream().ptr)
                return array
            host = to_cpu_array(array)
            self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
            array[...] = get_array_module(array).asarray(host)
            return array
        self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)
        return array

    def broadcast(self, array, root: int = 0):
        if is_gpu_array(array):  # a rare operation (start, resume): through the host is enough
            host = to_cpu_array(array)
            self.comm.Bcast(host, root=root)
            array[...] = get_array_module(array).asarray(host)
            return array
        self.comm.Bcast(array, root=root)
        return array

    def broadcast_object(self, value, root: int = 0):
        return self.comm.bcast(value, root=root)

    def allgather_object(self, value) -> list:
        return self.comm.allgather(value)

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


_world: Communicator | None = None


def init() -> Communicator:
    """The communicator of this job: MPI's when started
    by mpiexec with several ranks, else the stand-in.

    Without mpi4py installed, or as the only rank, this returns the one-process
    :class:`Communicator`, so the same script runs with and without MPI. Later
    calls return the same communicator.
    """
    global _world
    if _world is None:
        try:
            from mpi4py import MPI
        except ImportError:
            _world = Communicator()
        else:
            several = MPI.COMM_WORLD.Get_size() > 1
            _world = MPICommunicator(MPI.COMM_WORLD) if several else Communicator()
    return _world


def select_gpu(comm: Communicator) -> int:
    """Make this rank use the GPU numbered by its rank on
    this machine (before it allocates anything there)."""
    cp = array_module("cupy")
    device = comm.local_rank % cp.cuda.runtime.getDeviceCount()
    cp.cuda.Device(device).use()
    return device


def limit_blas_threads(comm: Communicator) -> int | None:
    """Give each rank on this machine an equal share of
    the cores for BLAS and for tinyflux's CPU kernels.

    Returns the number of threads, or None where threadpoolctl is missing
    (pip install 'tinyflux[mpi]'), after a warning: oversubscribed cores make
    every rank slower.
    """
    threads = max(1, (os.cpu_count() or 1) // comm.local_size)
    backends.cpu_ops().limit_threads(threads)  # Numba's kernels (numba_ops.py), where they run
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: each of the %d ranks may start "
                    "one BLAS thread per core", comm.local_size)
        return None
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def launched_by_mpi() -> int:
    """How many ranks the launcher started, read from
    its environment (0 if none): no MPI call needed."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def shard(count: int, comm: Communicator) -> slice:
    """This rank's part of ``count`` examples: consecutive, sizes differing by at most one.

    >>> [shard(10, _Fake(r, 3)) for r in range(3)]
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    return slice(comm.rank * count // comm.size, (comm.rank + 1) * count // comm.size)


class _Fake(Communicator):
    """A communicator that only knows its rank and size (for examples in docstrings and tests)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


def broadcast_parameters(model, comm: Communicator, root: int = 0) -> None:
    """Give every rank root's parameters and buffers (ranks that built the
    model with other seeds, or that did not load the checkpoint root loaded,
    become equal: weights, BatchNorm's statistics, Dropout's count)."""
    for p in model.parameters():
        comm.broadcast(p.data, root)
    for _, buffer in model.named_buffers():
        comm.broadcast(buffer.data, root)


def broadcast_optimizer(optimizer, comm: Communicator, root: int = 0) -> None:
    """Give every rank root's optimizer state: every
    hyperparameter (lr, t, betas...) and every state array."""
    inner = getattr(optimizer, "optimizer", optimizer)
    hyper, problems = inner.parse_hyperparameters(comm.broadcast_object(inner.hyperparameters(),
                                                                        root))
    assert not problems, problems  # root's own values: always valid
    arrays = inner.state_arrays()
    for kind in arrays:
        for array in arrays[kind]:
            if array is not None:
                comm.broadcast(array, root)
    inner.load_state(hyper, {})


def parameter_digest(model) -> str:
    """A SHA-256 of every parameter's bytes: equal on every rank while the ranks agree."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(np.ascontiguousarray(to_cpu_array(p.data)).tobytes())
    return digest.hexdigest()


def check_same_parameters(model, comm: Communicator) -> None:
    """Raise on every rank if any two ranks hold different
    parameters (they would drift apart from here)."""
    digests = comm.allgather_object(parameter_digest(model))
    if len(set(digests)) > 1:
        groups = {d: [r for r, other in enumerate(digests) if other == d] for d in digests}
        raise RuntimeError("the ranks' parameters differ: " + "; ".join(
            f"ranks {ranks} hold {d[:12]}..." for d, ranks in groups.items()))


def average_buffers(model, comm: Communicator) -> None:
    """Make every floating buffer (BatchNorm's running
    statistics) the mean of the ranks' own, on every rank."""
    for _, buffer in model.named_buffers():
        if buffer.data.dtype.kind == "f":
            comm.allreduce_sum(buffer.data)
            buffer.data /= comm.size


def sum_over_ranks(values, comm: Communicator) -> list[float]:
    """Each number summed over all ranks (e.g. correct
    answers and examples counted on each rank's slice)."""
    return comm.allreduce_sum(np.asarray(values, dtype=np.float64)).tolist()


class DataParallel:
    """An optimizer whose ``step`` first sums the
    gradients of all ranks, weighted by their examples.

    ``DataParallel(optim.Adam(model.parameters(), lr), comm)`` behaves as the
    inner optimizer (``lr``, ``t``, ``zero_grad``, checkpoints through
    ``tf.save``/``tf.load``) except that ``step(examples=n)`` makes the
    gradients those of the whole global batch first (see the module's
    docstring). A rank with no examples in a short last batch calls
    ``step(examples=0)`` without a backward pass: its gradients count as zero.
    """

    def __init__(self, optimizer, comm: Communicator):
        self.optimizer, self.comm = optimizer, comm
        self.params = optimizer.params
        first = self.params[0].data
        for i, p in enumerate(self.params):
            if p.data.dtype != first.dtype or backend_name(p.data) != backend_name(first):
                raise ValueError(f"DataParallel: parameter {i} is {backend_name(p.data)} "
                                 f"{p.data.dtype}, parameter 0 {backend_name(first)} "
                                 f"{first.dtype}: one flat gradient buffer "
                                 "needs one dtype on one device")
        self.sizes = [p.data.size for p in self.params]
        xp = get_array_module(first)
        # (total + 1,): the gradients, then n_r
        self.flat = xp.empty(sum(self.sizes) + 1, dtype=first.dtype)

    # the inner optimizer's face: the loop and the checkpoints see an ordinary optimizer
    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    @property
    def t(self):
        return self.optimizer.t

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def hyperparameters(self) -> dict:
        return self.optimizer.hyperparameters()

    def state_arrays(self) -> dict:
        return self.optimizer.state_arrays()

    def parse_hyperparameters(self, stored: dict):
        return self.optimizer.parse_hyperparameters(stored)

    def load_state(self, hyper: dict, arrays: dict) -> None:
        self.optimizer.load_state(hyper, arrays)

    def step(self, examples: int | None = None) -> None:
        """Sum the ranks' gradients weighted by ``examples`` (equal weights if None), then step."""
        weight = 1 if examples is None else examples
        start = 0
        for p, size in zip(self.params, self.sizes):
            view = self.flat[start:start + size]  # (size,)
            if p.grad is None or weight == 0:
                view[...] = 0
            else:
                view[...] = p.grad.reshape(-1)  # (*shape) -> (size,)
                view *= weight
            start += size
        self.flat[-1] = weight
        self.comm.allreduce_sum(self.flat)  # the one message of the step
        total = float(self.flat[-1])
        if total == 0:
            raise ValueError("DataParallel.step: no rank had any examples in this step")
        self.flat[:-1] /= total
        start = 0
        for p, size in zip(self.params, self.sizes):
            p.grad = self.flat[start:start + size].reshape(p.data.shape)  # (size,) -> shape: a view
            start += size
        self.optimizer.step()
