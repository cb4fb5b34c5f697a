"""Every CUDA kernel at the launch sizes CudaOps really uses, on inputs that need many blocks, against NumPy.

tests/cuda_emulation.py runs a launch as a GPU would: ``gridDim`` blocks of
``blockDim`` threads, each thread with its own ``blockIdx`` and ``threadIdx``,
and ``__syncthreads`` a real barrier for the GEMM's threads. ``CudaOps`` on the
stand-in for CuPy (tests/fake_cupy.py) chooses the sizes: 256 threads per
block, 16 x 16 GEMM tiles, at most 65,535 blocks, the grid-stride loops
covering the rest. These tests run each kernel through CudaOps on inputs of
hundreds of blocks, once with the real block limit and once with a limit of
3 blocks (every grid-stride loop and the GEMM's task loop then wrap many
times), plus two inputs past the real limit of 65,535 x 256 elements.

Then they break the kernel source the ways that a one-block emulation could
not see, and check that these comparisons fail: a grid-stride loop that
forgets ``blockIdx``, and a GEMM without either of its barriers.
"""
import numpy as np
import pytest

from cuda_emulation import compile_for_the_cpu
from fake_cupy import FakeCupy
from tinyflux.backends import NumpyOps, cuda_ops, numpy_ops
from tinyflux.backends.cuda_ops import CudaOps


def channel_major(x):
    """The same values as x, in the memory order a convolution returns: (C, N, ...) behind an (N, C, ...) view."""
    return np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)


def kernels_that_disagree_with_numpy(library) -> list:
    """Run every kernel through CudaOps on the emulated library; return the names of those whose results differ."""
    ops, reference, rng = CudaOps(FakeCupy(library)), NumpyOps(), np.random.default_rng(0)
    wrong = []

    # a 3-D convolution's columns and their adjoint: 3 clips of 4 channels, 9 x 10 x 11 voxels, 3x3x3, padded
    x = channel_major(rng.standard_normal((3, 4, 9, 10, 11)).astype(np.float32))
    kernel, stride, pad = (3, 3, 3), (1, 1, 1), (1, 1, 1)
    columns = ops.im2col(x, kernel, stride, pad)  # 320,760 numbers: 1,253 blocks
    if not np.array_equal(columns.col, numpy_ops.im2col(x, kernel, stride, pad)):
        wrong.append("im2col")
    gcol = rng.standard_normal(columns.col.shape).astype(np.float32)
    if not np.allclose(ops.col2im(gcol, columns), numpy_ops.col2im(gcol, x.shape, kernel, stride, pad), rtol=1e-5):
        wrong.append("col2im")

    # 2 x 2 x 2 max-pooling of 3 clips of 4 channels, 8 x 10 x 12 voxels
    x = channel_major(rng.standard_normal((3, 4, 8, 10, 12)).astype(np.float32))
    y, saved = ops.maxpool(x, (2, 2, 2), (2, 2, 2))
    y_numpy, saved_numpy = reference.maxpool(x, (2, 2, 2), (2, 2, 2))
    if not np.array_equal(y, y_numpy):
        wrong.append("maxpool")
    gy = rng.standard_normal(y.shape).astype(np.float32)
    if not np.array_equal(ops.maxpool_backward(gy, saved), reference.maxpool_backward(gy, saved_numpy)):
        wrong.append("maxpool_backward")

    # products with 3 x 3 tiles of 16 x 16 outputs whose edges stick out, on plain and transposed views;
    # the long one is cut into ranges (splits) that sum_splits adds up
    for k in (70, 3000):
        a, b = rng.standard_normal((37, k)).astype(np.float32), rng.standard_normal((45, k)).astype(np.float32).T
        if not np.allclose(ops.gemm(a, b), a @ b, rtol=1e-4, atol=1e-4):
            wrong.append("gemm" if cuda_ops.gemm_splits(37, 45, k)[0] == 1 else "split gemm + sum_splits")

    # three Adam steps over 5,000 numbers
    p, g = rng.standard_normal(5000).astype(np.float32), rng.standard_normal(5000).astype(np.float32)
    state = {"kernels": (p.copy(), np.zeros_like(p), np.zeros_like(p)), "numpy": (p.copy(), np.zeros_like(p),
                                                                                  np.zeros_like(p))}
    hypers = {name: np.array([1e-2, 0.9, 0.999, 1e-8, 0.0]) for name in state}
    for _ in range(3):
        for name, runner in (("kernels", ops), ("numpy", reference)):
            runner.count_step(hypers[name])
            runner.adam_update(*state[name][:1], g, *state[name][1:], hypers[name])
    if hypers["kernels"][4] != 3:
        wrong.append("count_step")
    if not np.allclose(state["kernels"][0], state["numpy"][0], rtol=1e-5, atol=1e-7):
        wrong.append("adam")
    return wrong


@pytest.mark.parametrize("max_blocks", [cuda_ops.MAX_BLOCKS, 3], ids=["real-limit", "wrapping-at-3-blocks"])
def test_every_kernel_matches_numpy_at_its_real_launch_size(emulated, monkeypatch, max_blocks):
    monkeypatch.setattr(cuda_ops, "MAX_BLOCKS", max_blocks)
    assert kernels_that_disagree_with_numpy(emulated) == []


def test_launches_past_the_block_limit_wrap_around_the_grid(emulated):
    """More than 65,535 blocks of 256 threads' worth of elements: the grid stops at the limit and each thread
    takes a second element, as on a GPU."""
    fake = FakeCupy(emulated)
    ops = CudaOps(fake)
    x = np.random.default_rng(1).standard_normal((16, 3, 16, 32, 32)).astype(np.float32)
    columns = ops.im2col(x, (3, 3, 3), (1, 1, 1), (1, 1, 1))  # 21.2 million numbers
    assert columns.col.size > cuda_ops.MAX_BLOCKS * cuda_ops.THREADS
    np.testing.assert_array_equal(columns.col, numpy_ops.im2col(x, (3, 3, 3), (1, 1, 1), (1, 1, 1)))
    n = cuda_ops.MAX_BLOCKS * cuda_ops.THREADS + 1000
    p, g = np.ones(n, np.float32), np.full(n, 0.5, np.float32)
    m, v, hyper = np.zeros(n, np.float32), np.zeros(n, np.float32), np.array([1e-3, 0.9, 0.999, 1e-8, 1.0])
    ops.adam_update(p, g, m, v, hyper)
    np.testing.assert_allclose(p, 1 - 1e-3, rtol=1e-6)  # the first Adam step moves every parameter by lr
    np.testing.assert_allclose(m, 0.05, rtol=1e-6)


def mutant(old: str, new: str, occurrence: int = 0) -> str:
    """The kernel source with one occurrence of ``old`` replaced by ``new``."""
    source = cuda_ops.source()
    at = -1
    for _ in range(occurrence + 1):
        at = source.index(old, at + 1)
    return source[:at] + new + source[at + len(old):]


GRID_STRIDE_START = "(I)blockIdx.x * blockDim.x + threadIdx.x"
MUTANTS = {  # name: (broken source, the kernels that must then disagree with NumPy)
    "grid-stride loop without blockIdx": (lambda: mutant(GRID_STRIDE_START, "threadIdx.x"),
                                          {"im2col", "col2im", "maxpool", "maxpool_backward", "adam",
                                           "split gemm + sum_splits"}),
    "gemm without its first barrier": (lambda: mutant("__syncthreads();", "", 0), {"gemm", "split gemm + sum_splits"}),
    "gemm without its second barrier": (lambda: mutant("__syncthreads();", "", 1), {"gemm", "split gemm + sum_splits"}),
}


@pytest.mark.parametrize("name", MUTANTS)
def test_the_harness_catches_a_broken_kernel(name, tmp_path):
    make_source, expected = MUTANTS[name]
    assert cuda_ops.source().count(GRID_STRIDE_START) == 1 and cuda_ops.source().count("__syncthreads();") == 2
    library = compile_for_the_cpu(tmp_path, make_source())
    if library is None:
        pytest.skip("no C++ compiler to emulate the kernels with")
    assert set(kernels_that_disagree_with_numpy(library)) == expected


def test_a_barrier_in_a_kernel_run_thread_after_thread_is_an_error(tmp_path):
    """The emulation runs kernels without barriers thread after thread; one that has a barrier after all must
    say so rather than compute without it."""
    source = mutant("        c[i] = sum;", "        __syncthreads();\n        c[i] = sum;")
    library = compile_for_the_cpu(tmp_path, source)
    if library is None:
        pytest.skip("no C++ compiler to emulate the kernels with")
    ops = CudaOps(FakeCupy(library))
    a = np.ones((20, 3000), np.float32)
    with pytest.raises(RuntimeError, match="sum_splits: reached __syncthreads"):
        ops.gemm(a, a.T)
