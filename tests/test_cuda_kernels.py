"""The CUDA kernels of tinyflux/backends/kernels.cu, checked without a GPU.

The kernel source is compiled three ways:

- with the machine's C++ compiler, launched with the grid and block sizes
  CudaOps uses (tests/cuda_emulation.py); the results must equal the NumPy
  implementations bit for bit (or to rounding where the order of a sum may
  differ). This checks all the index arithmetic, both index widths, and the
  GEMM's tiles and splits; tests/test_kernel_launches.py adds inputs of
  hundreds of blocks and checks that broken kernels fail.
- with nvcc for an H100 (sm_90), where nvcc is installed: valid CUDA.
- with hipcc for an AMD MI200 (gfx90a), a Radeon RX 6000 (gfx1030) and an RX 7000 card (gfx1100),
  where hipcc is installed: valid HIP.

What none of this checks is CuPy itself on a real GPU (compiling with NVRTC,
launching, its element-wise kernels); tests/test_parity.py does that where a
GPU exists. CudaOps on a stand-in for CuPy: tests/test_cuda_ops.py and
tests/test_capture.py.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

import tinyflux as tf
from tinyflux.modes import capturing
from cuda_emulation import SIGNATURES, call, instantiations
from tinyflux import backends, optim
from tinyflux.backends import cuda_ops, numpy_ops
from tinyflux.backends.cuda_ops import RocmOps


def strides(array):
    return [s // array.itemsize for s in array.strides]


def channel_major(x):
    """The same values as x, in the memory order a convolution returns: (C, N, ...) behind an (N, C, ...) view."""
    return np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)


CONVOLUTIONS = [  # (input shape, kernel, stride, pad)
    ((2, 3, 9), (3,), (1,), (1,)),
    ((2, 3, 10), (4,), (3,), (2,)),
    ((2, 1, 28, 28), (3, 3), (1, 1), (1, 1)),
    ((3, 4, 7, 7), (3, 3), (1, 1), (1, 1)),
    ((2, 2, 9, 8), (3, 2), (2, 1), (1, 0)),
    ((1, 2, 6, 10, 9), (3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((2, 1, 5, 7, 6), (2, 3, 2), (2, 2, 1), (0, 1, 1)),
]


def geometry(*args, index_bits=32):
    """cuda.geometry, with the kernels told to compute in 64-bit integers when index_bits is 64.

    Every test shape fits in 32 bits, so only this way do the 64-bit bodies of the kernels run here."""
    g = cuda_ops.geometry(*args)
    assert g[cuda_ops.GEOMETRY.index("NARROW")] == 1
    g[cuda_ops.GEOMETRY.index("NARROW")] = int(index_bits == 32)
    return g


INDEX_BITS = [pytest.param(32, id="int32"), pytest.param(64, id="int64")]


@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, kernel, stride, pad", CONVOLUTIONS)
def test_im2col_and_col2im_match_numpy(emulated, x_shape, kernel, stride, pad, dtype, index_bits):
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(x_shape).astype(dtype), channel_major(rng.standard_normal(x_shape).astype(dtype))):
        expected = numpy_ops.im2col(x, kernel, stride, pad)
        col = np.full(expected.shape, np.nan, dtype)
        out = expected.shape[2 + len(kernel):]
        call(emulated, "im2col", x, col, geometry(x.shape, strides(x), kernel, stride, pad, out, index_bits=index_bits))
        np.testing.assert_array_equal(col, expected)

    gcol = rng.standard_normal(expected.shape).astype(dtype)
    expected_gx = numpy_ops.col2im(gcol, x_shape, kernel, stride, pad)  # (N, C, *S) view of (C, N, *S)
    gx = np.full((x_shape[1], x_shape[0], *x_shape[2:]), np.nan, dtype)  # (C, N, *S), as the kernel writes it
    call(emulated, "col2im", gcol, gx,
         geometry(x_shape, [0] * len(x_shape), kernel, stride, pad, out, index_bits=index_bits))
    np.testing.assert_allclose(gx.swapaxes(0, 1), expected_gx, rtol=1e-6 if dtype == np.float32 else 1e-12)


POOLS = [  # (input shape, window, stride)
    ((2, 3, 10), (2,), (2,)),
    ((2, 4, 28, 28), (2, 2), (2, 2)),
    ((2, 3, 7, 7), (2, 2), (2, 2)),  # the floored remainder: the last row and column are in no window
    ((1, 2, 9, 8), (3, 2), (2, 1)),  # overlapping windows
    ((2, 2, 8, 8, 8), (2, 2, 2), (2, 2, 2)),
    ((1, 2, 5, 7, 6), (2, 3, 2), (1, 1, 1)),
]


def pool_with_kernels(library, x, window, stride, gy_values, index_bits=32):
    n, c, *sizes = x.shape
    out = tuple((s - k) // st + 1 for s, k, st in zip(sizes, window, stride))
    y = np.full((c, n, *out), np.nan, x.dtype)
    argmax = np.full((c, n, *out), -1, np.int32)
    no_pad = (0,) * len(window)
    call(library, "maxpool", x, y, argmax,
         geometry(x.shape, strides(x), window, stride, no_pad, out, index_bits=index_bits))
    gy_cn = np.ascontiguousarray(gy_values.swapaxes(0, 1))  # (N, C, *Q) -> (C, N, *Q)
    gx = np.full((c, n, *sizes), np.nan, x.dtype)
    call(library, "maxpool_backward", gy_cn, argmax, gx,
         geometry(x.shape, [0] * x.ndim, window, stride, no_pad, out, index_bits=index_bits))
    return y.swapaxes(0, 1), gx.swapaxes(0, 1)


@pytest.mark.parametrize("index_bits", INDEX_BITS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, window, stride", POOLS)
def test_maxpool_forward_and_backward_match_numpy(emulated, x_shape, window, stride, dtype, index_bits):
    rng = np.random.default_rng(1)
    x = channel_major(rng.standard_normal(x_shape).astype(dtype))
    tensor = tf.Tensor(x, requires_grad=True)
    y = tf.maxpool(tensor, window, stride)
    gy = rng.standard_normal(y.shape).astype(dtype)
    (y * tf.Tensor(gy)).sum().backward()
    kernel_y, kernel_gx = pool_with_kernels(emulated, x, window, stride, gy, index_bits)
    np.testing.assert_array_equal(kernel_y, y.data)
    # overlapping windows add their shares in another order than the per-axis NumPy passes: rounding only
    np.testing.assert_allclose(kernel_gx, tensor.grad, rtol=1e-6, atol=1e-6 if dtype == np.float32 else 1e-14)


def test_maxpool_ties_pick_the_first_maximum_in_row_major_order(emulated):
    x = np.zeros((1, 1, 4, 6), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0  # window (0, 0): both offsets 1 (row 0) and 2 (row 1) hold the maximum
    tensor = tf.Tensor(x, requires_grad=True)
    tf.maxpool(tensor, (2, 2)).sum().backward()
    _, kernel_gx = pool_with_kernels(emulated, x, (2, 2), (2, 2), np.ones((1, 1, 2, 3), np.float32))
    np.testing.assert_array_equal(kernel_gx, tensor.grad)
    assert kernel_gx[0, 0, 0, 1] == 1 and kernel_gx[0, 0, 1, 0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_matches_numpy_on_plain_and_transposed_views_whole_or_split(emulated, dtype):
    rng = np.random.default_rng(2)
    a_plain, b_plain = rng.standard_normal((37, 70)).astype(dtype), rng.standard_normal((70, 45)).astype(dtype)
    a_transposed = rng.standard_normal((70, 37)).astype(dtype).T  # (37, 70) view of (70, 37) memory
    b_transposed = rng.standard_normal((45, 70)).astype(dtype).T
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for a in (a_plain, a_transposed):
        for b in (b_plain, b_transposed):
            # 37 x 45 outputs in 3 x 3 tiles of 16 x 16: the last row and column of tiles stick out of the matrix
            for splits, chunk in ((1, 70), (2, 48), (5, 16)):  # k = 70 whole, or cut into ranges
                out = np.full((splits, 37, 45), np.nan, dtype)
                sizes = np.array([37, 45, 70, *strides(a), *strides(b), splits, chunk], dtype=np.int64)
                call(emulated, "gemm", a, b, out, sizes)
                ranges = [slice(i * chunk, (i + 1) * chunk) for i in range(splits)]
                for part, k in zip(out, ranges):
                    np.testing.assert_allclose(part, a[:, k] @ b[k], rtol=tolerance, atol=tolerance)
                c = np.full((37, 45), np.nan, dtype)
                call(emulated, "sum_splits", out, c, splits, c.size)
                np.testing.assert_allclose(c, a @ b, rtol=tolerance, atol=tolerance)


def test_gemm_cuts_long_sums_into_whole_tiles():
    for m, n, k in ((16, 9, 100352), (32, 144, 25088), (32, 25088, 144), (10, 288, 128), (5, 3, 0)):
        splits, chunk = cuda_ops.gemm_splits(m, n, k)
        assert 1 <= splits <= cuda_ops.GEMM_MAX_SPLITS and chunk % cuda_ops.GEMM_TILE == 0
        assert (splits - 1) * chunk < max(k, 1) <= splits * chunk  # every k in exactly one range
    assert cuda_ops.gemm_splits(16, 9, 100352)[0] == cuda_ops.GEMM_MAX_SPLITS  # one tile of outputs: split all the way
    assert cuda_ops.gemm_splits(32, 25088, 144)[0] == 1  # 3136 tiles: plenty of blocks already


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_kernel_reads_its_hyperparameters_from_memory(emulated, dtype):
    rng = np.random.default_rng(3)
    p0, g = rng.standard_normal(11).astype(dtype), rng.standard_normal(11).astype(dtype)
    expected = tf.Tensor(p0.copy())
    opt = optim.Adam([expected], lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    p, m, v = p0.copy(), np.zeros(11, dtype), np.zeros(11, dtype)
    for t in (1, 2, 3):
        expected.grad = g
        opt.step()
        if t == 2:
            opt.lr = 0.001  # a new learning rate reaches the kernel through memory
        hyper = np.array([0.01 if t < 3 else 0.001, 0.8, 0.95, 1e-6, t], dtype=np.float64)
        call(emulated, "adam", p, g, m, v, hyper, p.size)
        np.testing.assert_allclose(p, expected.data, rtol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(m, opt.m[0], rtol=1e-6)


def test_geometry_says_when_32_bit_indices_are_enough():
    def narrow(x_shape, kernel, x_strides=None):
        n, c, *sizes = x_shape
        x_strides = x_strides or list(np.cumprod((1,) + tuple(x_shape[::-1]))[-2::-1])  # contiguous
        out = tuple(s - k + 1 for s, k in zip(sizes, kernel))
        return dict(zip(cuda_ops.GEOMETRY, cuda_ops.geometry(x_shape, x_strides, kernel, (1,) * len(kernel),
                                                     (0,) * len(kernel), out)))["NARROW"]

    assert narrow((128, 16, 14, 14), (3, 3)) == 1  # MNIST: columns of 144 x 18,432 numbers
    assert narrow((64, 64, 16, 112, 112), (3, 3, 3)) == 0  # a video batch: columns of 2.3e10 numbers
    assert narrow((1, 1, 5), (2,), x_strides=[1, 1, 2**31]) == 0  # a view whose elements lie far apart


def test_geometry_pads_images_and_sequences_to_three_axes():
    g = dict(zip(cuda_ops.GEOMETRY, cuda_ops.geometry((2, 3, 9), (27, 9, 1), (3,), (2,), (1,), (5,))))
    assert (g["D"], g["H"], g["W"], g["KD"], g["KH"], g["KW"]) == (1, 1, 9, 1, 1, 3)
    assert (g["OD"], g["OH"], g["OW"], g["SW"], g["PW"], g["XN"], g["XW"], g["XD"]) == (1, 1, 5, 2, 1, 27, 1, 0)


def source_with_instances() -> str:
    return cuda_ops.source() + instantiations(extern_c=False)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_the_source_compiles_as_cuda_for_an_h100(tmp_path):
    (tmp_path / "kernels.cu").write_text(source_with_instances())
    result = subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "-cubin", "-o", str(tmp_path / "kernels.cubin"),
                             str(tmp_path / "kernels.cu")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.cubin").stat().st_size > 0


@pytest.mark.skipif(shutil.which("hipcc") is None, reason="hipcc is not installed (apt-get install hipcc)")
@pytest.mark.parametrize("architecture", ["gfx90a", "gfx1030", "gfx1100"])  # MI200; Radeon RX 6000; RX 7000
def test_the_source_compiles_as_hip_for_an_amd_gpu(tmp_path, architecture):
    """The same kernels, with the options RocmOps gives hipRTC, are valid HIP for these AMD GPUs. This says
    nothing about running them: no AMD GPU has. Debian's hipcc (ROCm 5.2) ships no device library for gfx1100, so
    there the code is compiled without one and not linked (-nogpulib -fgpu-rdc): the kernels are compiled for
    gfx1100, the library calls they make are not resolved."""
    (tmp_path / "kernels.hip").write_text("#include <hip/hip_runtime.h>\n" + source_with_instances())
    without_library = ["-nogpulib", "-fgpu-rdc"] if architecture == "gfx1100" else []  # rdc: no device link
    result = subprocess.run(["hipcc", *RocmOps.compile_options, *without_library, f"--offload-arch={architecture}",
                             "-c",
                             "-o", str(tmp_path / "kernels.o"), str(tmp_path / "kernels.hip")],
                            capture_output=True, text=True, env={**os.environ, "HIP_PLATFORM": "amd"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.o").stat().st_size > 0


def test_every_kernel_has_a_signature_here():
    assert set(SIGNATURES) == set(cuda_ops.KERNELS)
    for name in cuda_ops.KERNELS + cuda_ops.PLAIN_KERNELS:
        assert f"__global__ void {name}(" in cuda_ops.source()


def test_count_step_advances_t_only(emulated):
    hyper = np.array([1e-3, 0.9, 0.999, 1e-8, 41.0])
    call(emulated, "count_step", hyper)
    np.testing.assert_array_equal(hyper, [1e-3, 0.9, 0.999, 1e-8, 42.0])


def test_numpy_arrays_get_numpy_ops_and_cupy_arrays_follow_the_switch(monkeypatch):
    assert backends.ops_for(np.zeros(3)) is backends.cpu_ops()
    x = tf.Tensor(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
    assert tf.conv(x, tf.Tensor(np.ones((2, 1, 3, 3), np.float32)), pad=1).shape == (2, 2, 6, 6)
    # what ops_for gives a CuPy array: the kernels unless switched off, and always during a capture
    monkeypatch.setattr(tf.modes, "own_kernels", True)
    assert isinstance(backends._cupy_ops(None), cuda_ops.CudaOps)
    monkeypatch.setattr(tf.modes, "own_kernels", False)
    assert backends._cupy_ops(None) is backends.NUMPY_OPS
    with capturing():
        assert isinstance(backends._cupy_ops(None), cuda_ops.CudaOps)


def test_a_registered_backend_is_asked_first(monkeypatch):
    class Marked(np.ndarray):
        pass

    class MarkedOps(backends.NumpyOps):
        name = "marked"

    ops = MarkedOps()
    monkeypatch.setattr(backends, "_registered", list(backends._registered))
    backends.register(lambda array: isinstance(array, Marked), lambda array: ops)
    assert backends.ops_for(np.zeros(3).view(Marked)) is ops
    assert backends.ops_for(np.zeros(3)) is backends.cpu_ops()


@pytest.mark.parametrize("is_hip, expected", [(False, cuda_ops.CudaOps), (True, RocmOps)], ids=["cuda", "rocm"])
def test_cupy_arrays_get_rocm_ops_on_cupys_rocm_build(monkeypatch, emulated, is_hip, expected):
    """CuPy's ROCm build keeps the cupy name and says is_hip; its kernels are compiled with RocmOps's options."""
    from fake_cupy import FakeCupy
    fake = FakeCupy(emulated)
    fake.cuda.runtime = type("Runtime", (), {"is_hip": is_hip})
    compiled_with = []
    make_module = fake.RawModule

    def raw_module(code, options, name_expressions):
        compiled_with.append(options)
        return make_module(code, options, name_expressions)

    monkeypatch.setattr(fake, "RawModule", raw_module)
    monkeypatch.setattr(backends, "cupy", fake)
    monkeypatch.setattr(backends, "_cuda_ops", None)
    ops = backends.kernel_ops()
    assert type(ops) is expected and backends.kernel_ops() is ops
    hyper = np.zeros(5)
    ops.count_step(hyper)  # the first launch compiles the module
    assert hyper[4] == 1 and compiled_with == [expected.compile_options]


def test_the_source_has_no_include_lines_which_cupy_removes_on_hip():
    assert "#include" not in cuda_ops.source()
