"""CudaOps (tinyflux/backends/cuda_ops.py) end to end on the CPU: whole training steps through the kernels.

The ``gpu_path`` fixture (tests/conftest.py) registers ``CudaOps`` on a stand-in
for CuPy (tests/fake_cupy.py) for NumPy arrays, so every op takes the kernel
path and runs the kernels compiled for the CPU; the result must match the
NumPy path.
"""
import numpy as np
import pytest

import tinyflux as tf
from small_models import mnist_like_model
from tinyflux import optim


def train_three_steps(video=False):
    tf.seed(0)
    model = mnist_like_model(video)
    shape = (4, 1, 8, 8, 8) if video else (4, 1, 12, 12)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        tf.logit_cross_entropy(model(tf.Tensor(x)), np.arange(4)).backward()
        opt.step()
        opt.zero_grad()
    return [p.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("video", [False, True], ids=["images", "video"])
def test_training_steps_through_the_kernel_path_match_numpy(video, request):
    expected = train_three_steps(video)
    fake = request.getfixturevalue("gpu_path")
    got = train_three_steps(video)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    for name in ("im2col", "col2im", "maxpool", "maxpool_backward", "tinyflux_bias_relu",
                 "tinyflux_relu_backward", "count_step", "adam"):
        assert name in fake.launches, f"{name} never ran"
    assert fake.launches.count("adam") == 3  # one launch per step updates every parameter


def test_gemm_splits_long_sums_and_adds_the_parts(gpu_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4096)).astype(np.float32)  # (M, K): a weight gradient's shape, 6 long sums
    b = rng.standard_normal((2, 4096)).astype(np.float32).T  # (K, N) as a transposed view
    np.testing.assert_allclose(gpu_path.ops.gemm(a, b), a @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gpu_path.ops.gemm(a[:, :9], b[:9]), a[:, :9] @ b[:9], rtol=1e-5)  # short sums: whole
    assert gpu_path.launches == ["gemm", "sum_splits", "gemm"]


def test_gemm_of_mixed_types_promotes_as_matmul_does(gpu_path):
    """The kernel reads both operands as the first one's type: float32 @ float64 read float64 bytes as float32."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 40)).astype(np.float32)
    b = rng.standard_normal((40, 3))  # float64
    for x, y in ((a, b), (b.T.copy(), a.T.copy())):
        product = gpu_path.ops.gemm(x, y)
        assert product.dtype == np.float64
        np.testing.assert_allclose(product, x.astype(np.float64) @ y.astype(np.float64), rtol=1e-6)
    with pytest.raises(TypeError, match="float32 or float64, got int64 @ int64"):
        gpu_path.ops.gemm(np.ones((2, 2), np.int64), np.ones((2, 2), np.int64))
