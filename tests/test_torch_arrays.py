"""PyTorch's tensors as tinyflux's arrays (TorchArray, TorchNumpy, TorchOps), on torch's CPU device.

The parity suite (test_parity.py) and every test with the ``xp`` fixture
already run on ``torch:cpu``; here is what is particular to this backend:
NumPy's semantics where torch's differ, the refusals (host arrays, float64
where the device has none), moving models, runs, checkpoints and exports,
and twenty training steps against NumPy in both modes.
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'tinyflux[test]')")

import tinyflux as tf  # noqa: E402
from tinyflux import backends, optim  # noqa: E402
from tinyflux.backends import torch_arrays  # noqa: E402
from tinyflux.backends.torch_arrays import Float64Error, TorchArray  # noqa: E402
from tinyflux.backends.torch_ops import TorchOps  # noqa: E402
from tinyflux.device import gpu_advice, gpu_vendors  # noqa: E402

# the comparison that .ci/run makes in full, shortened here
_spec = importlib.util.spec_from_file_location("device_compare", Path(__file__).resolve().parent.parent / ".ci" /
                                               "device_compare.py")
device_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device_compare)
losses = device_compare.losses


@pytest.fixture
def xt():
    return backends.array_module("torch:cpu")


@pytest.fixture
def float32_only(monkeypatch):
    """As on Apple's MPS: every float64 array is refused."""
    monkeypatch.setenv(torch_arrays.FLOAT32_ONLY_VARIABLE, "1")
    monkeypatch.setattr(torch_arrays, "_NAMESPACES", {})
    return backends.array_module("torch:cpu")


def test_arrays_are_recognised_and_get_the_torch_ops_and_one_namespace(xt):
    x = xt.zeros((2, 3), dtype=np.float32)
    assert backends.is_torch_array(x) and backends.is_device_array(x) and not backends.is_torch_array(np.zeros(2))
    assert backends.backend_name(x) == "torch:cpu" and backends.get_array_module(x) is xt
    assert isinstance(backends.ops_for(x), TorchOps)
    assert x.dtype == np.float32 and x.shape == (2, 3) and x.size == 6 and x.nbytes == 24


def test_numpy_semantics_where_torch_differs(xt):
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x = xt.asarray(host)
    np.testing.assert_array_equal(tf.cpu(x.transpose(2, 0, 1)), host.transpose(2, 0, 1))
    np.testing.assert_array_equal(tf.cpu(x.transpose((1, 0, 2))), host.transpose((1, 0, 2)))
    np.testing.assert_array_equal(tf.cpu(x.T), host.T)
    assert x.transpose(2, 0, 1).strides == host.transpose(2, 0, 1).strides  # bytes, as NumPy counts
    kept = x.transpose(2, 0, 1).copy(order="K")  # memory order kept, as for NumPy's
    assert kept.strides == host.transpose(2, 0, 1).copy(order="K").strides
    assert x.transpose(2, 0, 1).copy().strides == host.transpose(2, 0, 1).copy().strides  # 'C' by default
    np.testing.assert_array_equal(tf.cpu(x.sum(axis=(0, 2))), host.sum(axis=(0, 2)))
    np.testing.assert_array_equal(tf.cpu(x.max(axis=1, keepdims=True)), host.max(axis=1, keepdims=True))
    assert tf.cpu(xt.asarray(np.arange(4)).mean()).dtype == np.float64  # NumPy's mean of integers
    mask = x > 5
    assert mask.view(np.uint8).dtype == np.uint8 and int(mask.view(np.uint8).sum()) == 18
    assert (2.0 * x).dtype == np.float32 and (x * np.float32(2)).dtype == np.float32  # scalars do not promote
    picked = x[np.array([1, 0]), :, np.array([3, 0])]  # advanced indexing, as NumPy broadcasts it
    np.testing.assert_array_equal(tf.cpu(picked), host[np.array([1, 0]), :, np.array([3, 0])])


def test_views_share_memory_and_in_place_updates_reach_the_base(xt):
    x = xt.zeros((3, 4), dtype=np.float32)
    row = x[1]
    row += 2.0
    x[2, 1:3] = xt.asarray(np.array([5, 6], dtype=np.int64))  # cast to x's dtype, as NumPy's assignment does
    xt.multiply(x[0], 3.0, out=x[0])
    expected = np.zeros((3, 4), np.float32)
    expected[1] += 2
    expected[2, 1:3] = [5, 6]
    np.testing.assert_array_equal(tf.cpu(x), expected)


def test_host_arrays_are_copied_in_and_never_converted_out_implicitly(xt):
    host = np.ones(3, dtype=np.float32)
    x = xt.asarray(host)
    x += 1.0
    assert host[0] == 1.0  # the NumPy array the data came from is not changed by in-place work on the device
    with pytest.raises(TypeError, match="not turned into a NumPy array implicitly"):
        np.asarray(x)
    with pytest.raises(TypeError, match="a NumPy array float32.* in an expression with a TorchArray"):
        x + host
    with pytest.raises(NotImplementedError, match="negative slice step"):
        x[::-1]


def test_float64_is_refused_in_float32_only_mode_as_mps_refuses_it(float32_only):
    with pytest.raises(Float64Error, match=r"float64 array on torch:cpu: TINYFLUX_TORCH_FLOAT32_ONLY=1"):
        float32_only.asarray(np.zeros(3))
    with pytest.raises(Float64Error):
        float32_only.zeros(3, dtype=np.float64)
    with pytest.raises(Float64Error):
        float32_only.asarray(np.zeros(3, np.float32)).astype(np.float64)
    assert float32_only.asarray(np.zeros(3), dtype=np.float32).dtype == np.float32  # asked for: converted first
    x = float32_only.asarray(np.zeros(3, np.float32))
    assert not backends.has_float64(x)
    p = tf.Tensor(x, requires_grad=True)
    assert optim.Adam([p]).groups[0].hyper.dtype == np.float32  # Adam keeps its numbers in float32 there


@pytest.mark.parametrize("float64", [True, False], ids=["as-is", "float32-only"])
def test_twenty_steps_equal_numpys_losses(float64, monkeypatch):
    if not float64:
        monkeypatch.setenv(torch_arrays.FLOAT32_ONLY_VARIABLE, "1")
        monkeypatch.setattr(torch_arrays, "_NAMESPACES", {})
    monkeypatch.setattr(tf.modes, "cpu_kernels", False)  # the NumPy code, the reference
    rng = np.random.default_rng(0)
    jobs = [(tf.models.mnist_convnet, rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)),
            (lambda: tf.models.video_convnet(3, 4, 8, (16, 16)), rng.random((24, 3, 8, 16, 16), dtype=np.float32),
             rng.integers(0, 4, 24))]
    for build, x, y in jobs:
        on_numpy = losses(build, x, y, tf.cpu)
        on_torch = losses(build, x, y, lambda obj: tf.to_device(obj, "torch:cpu"))
        np.testing.assert_allclose(on_torch, on_numpy, atol=1e-4, rtol=0)


def test_fit_resumes_saves_and_exports_on_torch(tmp_path, caplog):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 12, 12), dtype=np.uint8), rng.integers(0, 3, 64)

    def build(shape):
        return tf.nn.Chain(tf.nn.Conv((3, 3), 1, 4, tf.relu, pad=1), tf.nn.MaxPool((2, 2)), tf.nn.BatchNorm(4),
                           tf.nn.Dropout(0.2), tf.flatten, tf.nn.Dense(4 * 6 * 6, 3))

    history = tf.train.fit(build, (images, labels), epochs=1, batch_size=16, savepath=str(tmp_path / "run"),
                           device="torch:cpu", seed=0)
    history = tf.train.fit(build, (images, labels), epochs=2, batch_size=16, savepath=str(tmp_path / "run"),
                           device="torch:cpu", seed=0, resume=True)
    assert len(history.test_accuracy) == 2
    on_numpy = tf.train.fit(build, (images, labels), epochs=2, batch_size=16, savepath=str(tmp_path / "cpu"),
                            device="cpu", seed=0)
    np.testing.assert_allclose(history.train_loss, on_numpy.train_loss, rtol=1e-4)  # dropout draws included
    model = tf.to_device(build(None), "torch:cpu")
    tf.load(tmp_path / "run" / "model.h5", model)  # a checkpoint written from the device loads onto it
    assert backends.backend_name(model[0].weight.data) == "torch:cpu"
    assert backends.backend_name(model[2].running_mean.data) == "torch:cpu"
    pytest.importorskip("onnx", reason="onnx is not installed")
    tf.onnx.export(model.eval(), tmp_path / "torch.onnx", (1, 12, 12))
    host_model = build(None)
    tf.load(tmp_path / "run" / "model.h5", host_model)
    tf.onnx.export(host_model.eval(), tmp_path / "host.onnx", (1, 12, 12))
    assert (tmp_path / "torch.onnx").read_bytes() == (tmp_path / "host.onnx").read_bytes()


def test_device_names_are_checked_and_a_missing_device_is_named(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown device 'tpu': expected cpu, gpu, xpu, mps or torch:NAME"):
        tf.to_device(np.zeros(2), "tpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(RuntimeError, match=r"cannot make a tensor on torch:mps .*devices it finds here: .*"
                                               r"torch:cpu"):
            tf.to_device(np.zeros(2), "mps")
        with pytest.raises(ValueError, match=r"--device mps: PyTorch .* cannot make a tensor on torch:mps"):
            tf.train.Settings(device="mps").check()
    with pytest.raises(ValueError, match=r"--device: one of auto, cpu, gpu, xpu, mps or torch:NAME expected, "
                                         r"got 'tpu'"):
        tf.train.Settings(device="tpu").check()
    with pytest.raises(ValueError, match=r"--distributed with --device torch:cpu: not supported"):
        tf.train.Settings(device="torch:cpu", distributed=True).check()
    with pytest.raises(ValueError, match=r"--graph: CUDA graphs need a CUDA GPU, and this run is on torch:cpu"):
        tf.train.Settings(device="torch:cpu", graph=True).check()


def test_without_torch_the_error_names_the_wheel(monkeypatch):
    monkeypatch.delitem(sys.modules, "tinyflux.backends.torch_arrays")  # imported again, and failing:
    monkeypatch.delattr(backends, "torch_arrays")
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without PyTorch
    with pytest.raises(RuntimeError, match=r"PyTorch is not installed: pip install torch"):
        tf.to_device(np.zeros(2), "torch:cpu")


def test_gpu_advice_names_the_way_for_the_gpu_found(monkeypatch, tmp_path):
    for card, vendor in [("card0", "0x8086"), ("card1", "0x1002")]:
        (tmp_path / card / "device").mkdir(parents=True)
        (tmp_path / card / "device" / "vendor").write_text(vendor + "\n")
    assert gpu_vendors(str(tmp_path)) == ["Intel", "AMD"]
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    assert "torch==2.2.2" in gpu_advice("darwin", []) and "--device mps" in gpu_advice("darwin", [])
    assert "ROCm build" in gpu_advice("linux", ["AMD"]) and "--device torch:cuda" in gpu_advice("linux", ["AMD"])
    assert "whl/xpu" in gpu_advice("linux", ["Intel"]) and "tinyflux[cuda12]" in gpu_advice("linux", ["NVIDIA"])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # PyTorch's own answer comes first
    assert gpu_advice("darwin", []).startswith("PyTorch finds Apple's MPS GPU: use --device mps")
