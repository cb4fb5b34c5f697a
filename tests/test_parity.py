"""Each other array library against NumPy: every op and layer gives the same values and gradients, and the
same errors.

The other sides: CuPy (where a CUDA GPU answers), and PyTorch's tensors as
tinyflux's arrays (TorchArray, ``backends/torch_arrays.py``) on torch's CPU
device, twice: as it is, and in the float32-only mode that refuses float64 as
Apple's MPS does (there every float64 case must be refused with a
Float64Error, and every float32 case must pass). Each case builds its inputs
once in NumPy, runs forward and backward on NumPy arrays and again on the
other side's copies, and compares the outputs and every input gradient:
float32 within rtol 1e-4 / atol 1e-5, float64 within 1e-10. The backward pass
starts from a fixed random output gradient (``(y * g).sum()``), so every
output element gets a different weight.

``TINYFLUX_PARITY_SELFTEST=1`` adds NumPy in the place of the other side:
that only checks this harness (both sides are then the same library).
"""
import os
from dataclasses import dataclass

import numpy as np
import pytest

import tinyflux as tf
from tinyflux.modes import capturing
from tinyflux import backends, nn, optim
from tinyflux.models import mnist_convnet as mnist_model

SELFTEST = os.environ.get("TINYFLUX_PARITY_SELFTEST") == "1"
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


@dataclass
class Side:
    """The other side of a comparison: how arrays and models get there, and whether it computes in float64."""

    name: str
    device: str  # for tf.to_device
    float64: bool = True

    def asarray(self, array):
        return array if self.device == "cpu" else tf.to_device(array, self.device)

    def move(self, model):
        return tf.to_device(model, self.device)

    @property
    def xp(self):
        return backends.get_array_module(self.asarray(np.zeros(1, np.float32)))


def _sides():
    sides = [pytest.param(Side("cupy", "gpu"), id="cupy",
                          marks=pytest.mark.skipif(not backends.cupy_available(), reason="no CuPy or CUDA GPU"))]
    try:
        import torch  # noqa: F401  (pip install 'tinyflux[test]' brings PyTorch's CPU build here)
        have_torch = True
    except ImportError:
        have_torch = False
    no_torch = pytest.mark.skipif(not have_torch, reason="PyTorch is not installed")
    sides += [pytest.param(Side("torch", "torch:cpu"), id="torch-cpu", marks=no_torch),
              pytest.param(Side("torch float32 only", "torch:cpu", float64=False), id="torch-cpu-float32",
                           marks=no_torch)]
    if SELFTEST:
        sides.append(pytest.param(Side("numpy", "cpu"), id="selftest"))
    return sides


@pytest.fixture(params=_sides())
def side(request, monkeypatch):
    if not request.param.float64:
        from tinyflux.backends import torch_arrays
        monkeypatch.setenv(torch_arrays.FLOAT32_ONLY_VARIABLE, "1")
        monkeypatch.setattr(torch_arrays, "_NAMESPACES", {})  # namespaces made from now on read the variable
    return request.param


def run(function, arrays, move=None, grad_seed: int = 99):
    """Forward and backward of ``function`` on Tensors of ``arrays``; returns (output, gradients) in NumPy."""
    move = move or (lambda a: a)
    inputs = [tf.Tensor(move(a), requires_grad=a.dtype.kind == "f") for a in arrays]
    y = function(*inputs)
    g = np.random.default_rng(grad_seed).standard_normal(y.shape).astype(y.dtype)
    (y * tf.Tensor(move(g))).sum().backward()
    return backends.to_cpu_array(y.data), [None if t.grad is None else backends.to_cpu_array(t.grad) for t in inputs]


def refused_without_float64(side, arrays) -> bool:
    """On a float32-only side, True after checking that float64 inputs are refused, as MPS refuses them."""
    if side.float64 or all(a.dtype != np.float64 for a in arrays):
        return False
    from tinyflux.backends.torch_arrays import Float64Error
    with pytest.raises(Float64Error, match="float64"):
        run(lambda *inputs: inputs[0], arrays, side.asarray)
    return True


def assert_same(side, function, *arrays):
    if refused_without_float64(side, arrays):
        return
    cpu_y, cpu_grads = run(function, arrays)
    gpu_y, gpu_grads = run(function, arrays, side.asarray)
    tolerance = TOLERANCE[cpu_y.dtype.type]
    assert gpu_y.dtype == cpu_y.dtype and gpu_y.shape == cpu_y.shape
    np.testing.assert_allclose(gpu_y, cpu_y, **tolerance, err_msg="forward")
    for i, (c, g) in enumerate(zip(cpu_grads, gpu_grads)):
        assert (c is None) == (g is None), f"gradient of input {i} on one side only"
        if c is not None:
            np.testing.assert_allclose(g, c, **tolerance, err_msg=f"gradient of input {i}")


def normal(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_the_harness_notices_a_difference(side, monkeypatch):
    moved = side.asarray
    monkeypatch.setattr(side, "asarray", lambda a: moved(a * np.float32(1.001)))  # a 0.1% error
    with pytest.raises(AssertionError):
        assert_same(side, lambda a: tf.relu(a), normal((3, 4), np.float32))


DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

ELEMENTWISE = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0), "pow": lambda a, b: (a * a + 1.0) ** 1.5 + b,
    "neg": lambda a, b: -a + b, "exp": lambda a, b: tf.functional.exp(a) + b,
    "log": lambda a, b: tf.functional.log(a * a + 1.0) + b, "relu": lambda a, b: tf.relu(a) + b,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_with_broadcasting(side, name, dtype):
    assert_same(side, ELEMENTWISE[name], normal((4, 3, 5), dtype, 1), normal((3, 1), dtype, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_reshape_transpose_sum_mean(side, dtype):
    a, b = normal((6, 4), dtype, 1), normal((4, 5), dtype, 2)
    assert_same(side, lambda a, b: a @ b, a, b)
    assert_same(side, lambda a, b: tf.functional.transpose(a.reshape(2, 3, 4), 2, 0, 1) * 2.0 + b.sum(), a, b)
    assert_same(side, lambda a, b: tf.functional.sum(a, axis=0) + tf.functional.mean(b, axis=1, keepdims=True).sum(), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_log_softmax_and_bias_relu(side, dtype):
    x = normal((5, 7), dtype, 3) * 4
    assert_same(side, lambda x: tf.softmax(x), x)
    assert_same(side, lambda x: tf.log_softmax(x), x)
    assert_same(side, lambda x, b: tf.functional.bias_relu(x, b), normal((2, 3, 4, 4), dtype, 4), normal((3,), dtype, 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_cross_entropy_with_integer_and_onehot_labels(side, dtype):
    scores, labels = normal((6, 10), dtype, 6) * 3, np.array([0, 3, 9, 3, 1, 7])
    if refused_without_float64(side, [scores]):
        return
    cpu_y, cpu_grads = run(lambda s: tf.logit_cross_entropy(s, labels), [scores])
    gpu_y, gpu_grads = run(lambda s: tf.logit_cross_entropy(s, side.asarray(labels)), [scores], side.asarray)
    np.testing.assert_allclose(gpu_y, cpu_y, **TOLERANCE[dtype])
    np.testing.assert_allclose(gpu_grads[0], cpu_grads[0], **TOLERANCE[dtype])
    onehot = tf.onehot(labels, 10).astype(dtype)
    assert_same(side, lambda s, t: tf.logit_cross_entropy(s, t.data), scores, onehot)


CONVOLUTIONS = [  # (input shape, weight shape, stride, pad)
    ((2, 3, 9), (4, 3, 3), 1, 1),
    ((2, 3, 9), (4, 3, 2), 2, 0),
    ((2, 1, 28, 28), (16, 1, 3, 3), 1, 1),  # the MNIST layers
    ((3, 16, 14, 14), (32, 16, 3, 3), 1, 1),
    ((2, 32, 7, 7), (32, 32, 3, 3), 1, 1),
    ((2, 2, 9, 8), (3, 2, 3, 2), (2, 1), (1, 0)),
    ((2, 1, 6, 10, 9), (4, 1, 3, 3, 3), 1, 1),  # video
    ((1, 2, 5, 7, 6), (3, 2, 2, 3, 2), 2, (0, 1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONVOLUTIONS)
def test_convolution(side, x_shape, w_shape, stride, pad, dtype):
    x, w, b = normal(x_shape, dtype, 1), normal(w_shape, dtype, 2), normal(w_shape[:1], dtype, 3)
    assert_same(side, lambda x, w, b: tf.conv(x, w, b, stride, pad), x, w, b)


POOLS = [((2, 3, 10), (2,), None), ((2, 16, 28, 28), (2, 2), None), ((2, 3, 7, 7), (2, 2), None),
         ((1, 2, 9, 8), (3, 2), (2, 1)), ((2, 2, 8, 8, 8), (2, 2, 2), None), ((1, 2, 5, 7, 6), (2, 3, 2), 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, window, stride", POOLS)
def test_maxpool(side, x_shape, window, stride, dtype):
    assert_same(side, lambda x: tf.maxpool(x, window, stride), normal(x_shape, dtype, 4))


def test_maxpool_ties_go_to_the_same_input(side):
    x = np.zeros((1, 1, 4, 4), np.float32)  # every window is a tie: the first offset (row-major) wins
    assert_same(side, lambda x: tf.maxpool(x, (2, 2)), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_flatten(side, dtype):
    x, w, b = normal((4, 2, 3, 3), dtype, 1), normal((5, 18), dtype, 2), normal((5,), dtype, 3)
    assert_same(side, lambda x, w, b: tf.functional.linear(tf.flatten(x), w, b), x, w, b)


@pytest.mark.parametrize("make_optimizer", [lambda p: optim.Adam(p, lr=3e-3), lambda p: optim.SGD(p, 0.05, 0.9)],
                         ids=["adam", "sgd"])
def test_training_steps_give_the_same_parameters(side, make_optimizer):
    """Five steps of the MNIST model (fused conv + pool path included) on both sides."""
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    labels = np.arange(16) % 10
    results = []
    for on_gpu in (False, True):
        tf.seed(0)
        model = mnist_model()
        if on_gpu:
            model = side.move(model)
        step = tf.train.Step(model, tf.logit_cross_entropy, make_optimizer(model.parameters()))
        for _ in range(5):
            step(side.asarray(x) if on_gpu else x, side.asarray(labels) if on_gpu else labels)
        results.append([backends.to_cpu_array(p.data) for p in model.parameters()])
    for cpu_p, gpu_p in zip(*results):
        np.testing.assert_allclose(gpu_p, cpu_p, rtol=1e-4, atol=1e-5)


def on(xp, layer):
    """The layer on the side of xp: a GPU input needs GPU parameters, or the error is about mixed devices."""
    return layer if xp is np else tf.to_device(layer, SIDE_OF[id(xp)].device)


SIDE_OF = {}  # id(the side's array module) -> the side, for on()


BAD_INPUTS = {
    "conv channels": lambda xp: tf.conv(tf.Tensor(xp.zeros((1, 2, 5, 5), xp.float32)),
                                        tf.Tensor(xp.zeros((4, 3, 3, 3), xp.float32))),
    "conv too small": lambda xp: tf.conv(tf.Tensor(xp.zeros((1, 1, 2, 2), xp.float32)),
                                         tf.Tensor(xp.zeros((4, 1, 3, 3), xp.float32))),
    "pool window": lambda xp: tf.maxpool(tf.Tensor(xp.zeros((1, 1, 3, 3), xp.float32)), (4, 4)),
    "dense features": lambda xp: on(xp, nn.Dense(5, 2))(tf.Tensor(xp.zeros((3, 4), xp.float32))),
    "label range": lambda xp: tf.logit_cross_entropy(tf.Tensor(xp.zeros((2, 10), xp.float32)), xp.array([1, 10])),
    "label count": lambda xp: tf.logit_cross_entropy(tf.Tensor(xp.zeros((2, 10), xp.float32)), xp.array([1])),
    "reshape size": lambda xp: tf.Tensor(xp.zeros((2, 3), xp.float32)).reshape(4, 2),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_the_same_error(side, case):
    SIDE_OF[id(side.xp)] = side
    errors = []
    for xp in (np, side.xp):
        with pytest.raises(Exception) as raised:
            BAD_INPUTS[case](xp)
        errors.append((type(raised.value), str(raised.value)))
    assert errors[0] == errors[1]


@pytest.mark.skipif(not backends.cupy_available(), reason="tf.capture needs CuPy and a CUDA GPU")
def test_a_captured_step_gives_the_eager_parameters_after_100_steps():
    """tf.capture against the same step run eagerly on the same kernels (capturing()), lr drop included."""
    GPU = backends.array_module("cupy")
    rng = np.random.default_rng(0)
    batches = [(GPU.asarray(rng.random((32, 1, 28, 28), dtype=np.float32)), GPU.asarray(rng.integers(0, 10, 32)))
               for _ in range(10)]
    results, losses = [], []
    for captured in (False, True):
        tf.seed(0)
        model = tf.gpu(mnist_model())
        opt = optim.Adam(model.parameters(), lr=3e-3)
        step = tf.capture(model, tf.logit_cross_entropy, opt, *batches[0]) if captured else None
        history = []
        for i in range(100):
            opt.lr = 3e-3 if i < 50 else 3e-4
            x, y = batches[i % len(batches)]
            if captured:
                history.append(float(step(x, y)))
            else:
                with capturing():
                    loss = tf.logit_cross_entropy(model(tf.Tensor(x)), y)
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
                history.append(loss.item())
        assert opt.t == 100
        results.append([backends.to_cpu_array(p.data) for p in model.parameters()])
        losses.append(history)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    for eager, graphed in zip(*results):
        np.testing.assert_allclose(graphed, eager, rtol=1e-4, atol=1e-5)
