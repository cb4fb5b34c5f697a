"""CuPy against NumPy: every op and layer gives the same values and gradients, and the same errors.

Each case builds its inputs once in NumPy, runs forward and backward on
NumPy arrays and again on CuPy copies, and compares the outputs and every
input gradient: float32 within rtol 1e-4 / atol 1e-5, float64 within 1e-10.
The backward pass starts from a fixed random output gradient (``(y * g).sum()``),
so every output element gets a different weight.

Without CuPy and a GPU the module is skipped. ``TINYFLUX_PARITY_SELFTEST=1``
runs it with NumPy in the place of CuPy: that only checks this harness (both
sides are then the same library), which is how it was checked on a CPU.
"""
import os

import numpy as np
import pytest

import tinyflux as tf
from tinyflux.modes import capturing
from tinyflux import backends, nn, optim
from tinyflux.models import mnist_convnet as mnist_model

SELFTEST = os.environ.get("TINYFLUX_PARITY_SELFTEST") == "1"
if not SELFTEST and not backends.cupy_available():
    pytest.skip("CuPy or a CUDA GPU is not available (TINYFLUX_PARITY_SELFTEST=1 checks the harness on NumPy)",
                allow_module_level=True)
GPU = np if SELFTEST else backends.array_module("cupy")
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def to_gpu(array):
    return GPU.asarray(array)


def run(function, arrays, on_gpu: bool, grad_seed: int = 99):
    """Forward and backward of ``function`` on Tensors of ``arrays``; returns (output, gradients) in NumPy."""
    move = to_gpu if on_gpu else (lambda a: a)
    inputs = [tf.Tensor(move(a), requires_grad=a.dtype.kind == "f") for a in arrays]
    y = function(*inputs)
    g = np.random.default_rng(grad_seed).standard_normal(y.shape).astype(y.dtype)
    (y * tf.Tensor(move(g))).sum().backward()
    return backends.to_cpu_array(y.data), [None if t.grad is None else backends.to_cpu_array(t.grad) for t in inputs]


def assert_same(function, *arrays):
    cpu_y, cpu_grads = run(function, arrays, on_gpu=False)
    gpu_y, gpu_grads = run(function, arrays, on_gpu=True)
    tolerance = TOLERANCE[cpu_y.dtype.type]
    assert gpu_y.dtype == cpu_y.dtype and gpu_y.shape == cpu_y.shape
    np.testing.assert_allclose(gpu_y, cpu_y, **tolerance, err_msg="forward")
    for i, (c, g) in enumerate(zip(cpu_grads, gpu_grads)):
        assert (c is None) == (g is None), f"gradient of input {i} on one side only"
        if c is not None:
            np.testing.assert_allclose(g, c, **tolerance, err_msg=f"gradient of input {i}")


def normal(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def test_the_harness_notices_a_difference(monkeypatch):
    import sys
    monkeypatch.setattr(sys.modules[__name__], "to_gpu", lambda a: GPU.asarray(a * 1.001))  # a 0.1% error
    with pytest.raises(AssertionError):
        assert_same(lambda a: tf.relu(a), normal((3, 4), np.float32))


DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

ELEMENTWISE = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0), "pow": lambda a, b: (a * a + 1.0) ** 1.5 + b,
    "neg": lambda a, b: -a + b, "exp": lambda a, b: tf.functional.exp(a) + b,
    "log": lambda a, b: tf.functional.log(a * a + 1.0) + b, "relu": lambda a, b: tf.relu(a) + b,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_with_broadcasting(name, dtype):
    assert_same(ELEMENTWISE[name], normal((4, 3, 5), dtype, 1), normal((3, 1), dtype, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_reshape_transpose_sum_mean(dtype):
    a, b = normal((6, 4), dtype, 1), normal((4, 5), dtype, 2)
    assert_same(lambda a, b: a @ b, a, b)
    assert_same(lambda a, b: tf.functional.transpose(a.reshape(2, 3, 4), 2, 0, 1) * 2.0 + b.sum(), a, b)
    assert_same(lambda a, b: tf.functional.sum(a, axis=0) + tf.functional.mean(b, axis=1, keepdims=True).sum(), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_log_softmax_and_bias_relu(dtype):
    x = normal((5, 7), dtype, 3) * 4
    assert_same(lambda x: tf.softmax(x), x)
    assert_same(lambda x: tf.log_softmax(x), x)
    assert_same(lambda x, b: tf.functional.bias_relu(x, b), normal((2, 3, 4, 4), dtype, 4), normal((3,), dtype, 5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_cross_entropy_with_integer_and_onehot_labels(dtype):
    scores, labels = normal((6, 10), dtype, 6) * 3, np.array([0, 3, 9, 3, 1, 7])
    cpu_y, cpu_grads = run(lambda s: tf.logit_cross_entropy(s, labels), [scores], on_gpu=False)
    gpu_y, gpu_grads = run(lambda s: tf.logit_cross_entropy(s, to_gpu(labels)), [scores], on_gpu=True)
    np.testing.assert_allclose(gpu_y, cpu_y, **TOLERANCE[dtype])
    np.testing.assert_allclose(gpu_grads[0], cpu_grads[0], **TOLERANCE[dtype])
    onehot = tf.onehot(labels, 10).astype(dtype)
    assert_same(lambda s, t: tf.logit_cross_entropy(s, t.data), scores, onehot)


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
def test_convolution(x_shape, w_shape, stride, pad, dtype):
    x, w, b = normal(x_shape, dtype, 1), normal(w_shape, dtype, 2), normal(w_shape[:1], dtype, 3)
    assert_same(lambda x, w, b: tf.conv(x, w, b, stride, pad), x, w, b)


POOLS = [((2, 3, 10), (2,), None), ((2, 16, 28, 28), (2, 2), None), ((2, 3, 7, 7), (2, 2), None),
         ((1, 2, 9, 8), (3, 2), (2, 1)), ((2, 2, 8, 8, 8), (2, 2, 2), None), ((1, 2, 5, 7, 6), (2, 3, 2), 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, window, stride", POOLS)
def test_maxpool(x_shape, window, stride, dtype):
    assert_same(lambda x: tf.maxpool(x, window, stride), normal(x_shape, dtype, 4))


def test_maxpool_ties_go_to_the_same_input():
    x = np.zeros((1, 1, 4, 4), np.float32)  # every window is a tie: the first offset (row-major) wins
    assert_same(lambda x: tf.maxpool(x, (2, 2)), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_flatten(dtype):
    x, w, b = normal((4, 2, 3, 3), dtype, 1), normal((5, 18), dtype, 2), normal((5,), dtype, 3)
    assert_same(lambda x, w, b: tf.functional.linear(tf.flatten(x), w, b), x, w, b)


@pytest.mark.parametrize("make_optimizer", [lambda p: optim.Adam(p, lr=3e-3), lambda p: optim.SGD(p, 0.05, 0.9)],
                         ids=["adam", "sgd"])
def test_training_steps_give_the_same_parameters(make_optimizer):
    """Five steps of the MNIST model (fused conv + pool path included) on both sides."""
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    labels = np.arange(16) % 10
    results = []
    for on_gpu in (False, True):
        tf.seed(0)
        model = mnist_model()
        if on_gpu:
            model = tf.gpu(model)
        step = tf.train.Step(model, tf.logit_cross_entropy, make_optimizer(model.parameters()))
        for _ in range(5):
            step(to_gpu(x) if on_gpu else x, to_gpu(labels) if on_gpu else labels)
        results.append([backends.to_cpu_array(p.data) for p in model.parameters()])
    for cpu_p, gpu_p in zip(*results):
        np.testing.assert_allclose(gpu_p, cpu_p, rtol=1e-4, atol=1e-5)


def on(xp, layer):
    """The layer on the side of xp: a GPU input needs GPU parameters, or the error is about mixed devices."""
    return tf.gpu(layer) if xp is GPU and not SELFTEST else layer


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
def test_bad_input_raises_the_same_error(case):
    errors = []
    for xp in (np, GPU):
        with pytest.raises(Exception) as raised:
            BAD_INPUTS[case](xp)
        errors.append((type(raised.value), str(raised.value)))
    assert errors[0] == errors[1]


@pytest.mark.skipif(SELFTEST, reason="tf.capture needs CuPy and a GPU")
def test_a_captured_step_gives_the_eager_parameters_after_100_steps():
    """tf.capture against the same step run eagerly on the same kernels (capturing()), lr drop included."""
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
