"""Intel GPUs through dpnp (``--device xpu``): what can be checked without dpnp installed.

The real check, training through dpnp on the CPU's OpenCL device against
NumPy, is .ci/dpnp_check (run by .ci/run, in a virtual environment of its own
because dpnp's wheels are 2.9 GB); its log is docs/results/dpnp_check.log.
"""
import numpy as np
import pytest

import tinyflux as tf
from tinyflux import backends, optim
from tinyflux.backends import arrays
from tinyflux.backends.dpnp_ops import DpnpOps
from tinyflux.train.loop import DrawnOnHost


class FakeDpnpArray(np.ndarray):
    """Looks like a dpnp array to tinyflux, which asks the type's module name."""


FakeDpnpArray.__module__ = "dpnp.dpnp_array"


def test_dpnp_arrays_are_recognised_without_importing_dpnp(monkeypatch):
    monkeypatch.setattr(arrays, "_dpnp", False)  # as if dpnp were not installed: no import is attempted
    x = np.zeros(3).view(FakeDpnpArray)
    assert arrays.is_xpu_array(x) and not arrays.is_xpu_array(np.zeros(3))
    assert backends.backend_name(x) == "dpnp"
    assert isinstance(backends.ops_for(x), DpnpOps) and backends.ops_for(np.zeros(3)) is backends.cpu_ops()


def test_dpnp_ops_bias_relu_matches_numpy_and_keeps_nan():
    rng = np.random.default_rng(0)
    x, b = rng.standard_normal((2, 3, 4, 5)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    np.testing.assert_array_equal(DpnpOps().bias_relu(x, b), backends.NUMPY_OPS.bias_relu(x, b))


@pytest.mark.parametrize("window", [(2, 2), (3, 3)])
def test_max_pooling_as_dpnp_runs_it_matches_a_plain_maximum(window):
    """NumpyOps's pooling now avoids in-place maximum(y, v, out=y), which dpnp refuses: same results."""
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    y, _ = backends.NUMPY_OPS.maxpool(x, window, window)
    k = window[0]
    expected = x[:, :, :9 // k * k, :9 // k * k].reshape(2, 3, 9 // k, k, 9 // k, k).max(axis=(3, 5))
    np.testing.assert_array_equal(y, expected)


def test_adam_keeps_its_hyperparameters_in_the_parameters_dtype_without_float64(monkeypatch):
    rng = np.random.default_rng(2)
    start, grad = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    results = {}
    for float64 in (True, False):
        monkeypatch.setattr(optim, "has_float64", lambda array: float64)
        p = tf.Tensor(start.copy(), requires_grad=True)
        opt = optim.Adam([p], lr=1e-2)
        assert opt.groups[0].hyper.dtype == (np.float64 if float64 else np.float32)
        for _ in range(5):
            p.grad = grad.copy()
            opt.step()
        assert opt.t == 5
        results[float64] = p.data.copy()
    np.testing.assert_allclose(results[False], results[True], rtol=1e-6, atol=1e-7)


def test_device_xpu_without_dpnp_says_what_to_install(monkeypatch):
    monkeypatch.setattr(arrays, "_dpnp", False)
    settings = tf.train.Settings(device="xpu")
    with pytest.raises(ValueError, match=r"--device xpu: dpnp is not installed.*tinyflux\[xpu\]"):
        settings.check()
    with pytest.raises(RuntimeError, match=r"tf.xpu: dpnp is not installed"):
        tf.xpu(np.zeros(3))
    assert tf.train.Settings(device="cpu").to_device(np.zeros(3)).__class__ is np.ndarray


def test_noise_for_dpnp_is_drawn_on_the_host_and_moved(monkeypatch):
    from tinyflux.train import loop
    moved = []
    stream = loop.RandomStream(3, move=lambda array: moved.append(array.shape) or array)
    rng = stream.for_epoch(1)
    assert isinstance(rng, DrawnOnHost)
    noise = rng.standard_normal((2, 4), dtype=np.float32)
    assert isinstance(rng.integers(0, 5), (int, np.integer)) and isinstance(rng.random(), float)
    rng.uniform(0.8, 1.2, 3)  # the own-clips augmentation's draw: every Generator method is passed on
    assert moved == [(2, 4), (3,)]
    with pytest.raises(AttributeError):
        rng.no_such_method()
    # the same numbers as a CPU run with the same seed, and a state saved as on the CPU
    np.testing.assert_array_equal(noise, np.random.default_rng(3).standard_normal((2, 4), dtype=np.float32))
    assert stream.state() != ""


def test_graph_and_distributed_are_refused_on_xpu_with_the_reason(monkeypatch):
    monkeypatch.setattr(arrays, "_dpnp", np)  # as if dpnp were there: the settings are checked, nothing runs
    with pytest.raises(ValueError, match=r"--graph: CUDA graphs need a CUDA GPU, and this run is on an Intel GPU"):
        tf.train.Settings(device="xpu", graph=True).check()
    with pytest.raises(ValueError, match=r"--distributed with --device xpu: not supported"):
        tf.train.Settings(device="xpu", distributed=True).check()


def test_load_model_refuses_a_device_it_cannot_use(tmp_path):
    """A device name such as "cpu" would be true, and silently mean the GPU: it is refused before the file is read."""
    with pytest.raises(TypeError, match=r"load_model: device must be True, False or a function .*got 'cpu'"):
        tf.train.load_model(tmp_path / "missing.h5", tf.models.mnist_convnet, "cpu")
