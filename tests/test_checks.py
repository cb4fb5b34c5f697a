"""Bad arguments get an error that names the argument and the value, at the call that made the mistake."""
import math

import numpy as np
import pytest

import tinyflux as tf
from tinyflux import checks, nn, optim


@pytest.mark.parametrize("build, error, message", [
    (lambda: nn.Conv((3, 3), 1, 2, stride=1.5), TypeError, "Conv stride: expected an integer or 2 integers, got 1.5"),
    (lambda: nn.Conv((2.5, 2.5), 1, 2), TypeError, r"Conv kernel: expected integers, got \(2.5, 2.5\)"),
    (lambda: nn.Conv((3, 3), 1, 16.0), TypeError, r"Conv out_channels: expected an integer, got 16.0 \(float\)"),
    (lambda: nn.Conv((3, 3), 1, -4), ValueError, "Conv out_channels: must be at least 1, got -4"),
    (lambda: nn.Conv((3, 3), 1, 0), ValueError, "Conv out_channels: must be at least 1, got 0"),
    (lambda: nn.Conv((3, 3), "1", 4), TypeError, r"Conv in_channels: expected an integer, got '1' \(str\)"),
    (lambda: nn.Conv((3, 3), 1, 4, pad=(1, 1, 1)), ValueError, "Conv pad: expected an integer or 2 values"),
    (lambda: nn.Conv((3, 3), 1, 4, 0.5), TypeError, "Conv: activation must be a function such as tf.relu"),
    (lambda: nn.Dense(-3, 10), ValueError, "Dense in_features: must be at least 1, got -3"),
    (lambda: nn.Dense(3, True), TypeError, r"Dense out_features: expected an integer, got True \(bool\)"),
    (lambda: nn.MaxPool((2.5, 2.5)), TypeError, r"MaxPool window: expected integers, got \(2.5, 2.5\)"),
    (lambda: nn.MaxPool((2, 0)), ValueError, "MaxPool window: every value must be at least 1"),
    (lambda: nn.MaxPool((2, 2), stride=1.0), TypeError, "MaxPool stride: expected an integer or 2 integers"),
])
def test_layer_constructors_name_the_bad_argument(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_integer_sizes_of_numpy_types_are_accepted():
    layer = nn.Conv((np.int64(3), 3), np.int32(1), np.int64(4), pad=np.int8(1))
    assert layer.kernel == (3, 3) and layer.out_channels == 4 and type(layer.out_channels) is int
    assert nn.MaxPool(np.int64(2)).window == (2,)


def params():
    return nn.Dense(3, 2).parameters()


@pytest.mark.parametrize("build, error, message", [
    (lambda: optim.Adam(None), TypeError, "Adam: params must be a list of parameter Tensors"),
    (lambda: optim.Adam(params()[0]), TypeError, "Adam: params must be a list of parameter Tensors"),
    (lambda: optim.Adam(params(), lr=-1e-3), ValueError, "Adam lr: must be at least 0, got -0.001"),
    (lambda: optim.Adam(params(), lr=math.nan), ValueError, "Adam lr: must be a finite number, got nan"),
    (lambda: optim.Adam(params(), lr=math.inf), ValueError, "Adam lr: must be a finite number, got inf"),
    (lambda: optim.Adam(params(), lr="0.001"), TypeError, r"Adam lr: expected a number, got '0.001' \(str\)"),
    (lambda: optim.Adam(params(), betas=(0.9, 1.0)), ValueError, "Adam beta2: must be below 1, got 1"),
    (lambda: optim.Adam(params(), betas=(-0.1, 0.9)), ValueError, "Adam beta1: must be at least 0, got -0.1"),
    (lambda: optim.Adam(params(), betas=0.9), TypeError, "Adam betas: expected two numbers"),
    (lambda: optim.Adam(params(), eps=-1.0), ValueError, "Adam eps: must be at least 0"),
    (lambda: optim.SGD(params(), lr=math.nan), ValueError, "SGD lr: must be a finite number"),
    (lambda: optim.SGD(params(), momentum=1.5), ValueError, "SGD momentum: must be below 1, got 1.5"),
])
def test_optimizer_constructors_name_the_bad_argument(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_a_learning_rate_set_later_is_checked_too():
    opt = optim.Adam(params(), lr=1e-3)
    opt.lr /= 10  # a schedule's drop is fine
    assert opt.lr == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="Adam lr: must be a finite number, got nan"):
        opt.lr = math.nan
    assert opt.lr == pytest.approx(1e-4)


def test_backward_on_a_result_without_a_graph_raises():
    model = nn.Dense(3, 2)
    x = tf.Tensor(np.ones((4, 3), np.float32))
    with tf.no_grad():
        loss = tf.logit_cross_entropy(model(x), np.array([0, 1, 0, 1]))
    with pytest.raises(RuntimeError, match="backward\\(\\): this tensor has no graph.*tf.no_grad\\(\\)"):
        loss.backward()
    with pytest.raises(RuntimeError, match="no graph"):
        (tf.Tensor(np.ones(1)) * 2).sum().backward()  # nothing in it requires a gradient


def test_a_step_without_gradients_raises_and_counts_nothing():
    model = nn.Dense(3, 2)
    opt = optim.Adam(model.parameters())
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"Adam.step\(\): no parameter has a gradient; call loss.backward"):
        opt.step()
    assert opt.t == 0 and all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
    with pytest.raises(RuntimeError, match=r"SGD.step\(\): no parameter has a gradient"):
        optim.SGD(model.parameters()).step()


def test_onecold_needs_rows_of_scores():
    assert tf.onecold(np.array([[0.1, 0.9], [2.0, 1.0]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"onecold: expected scores of shape \(N, classes\), got \(3,\)"):
        tf.onecold(np.array([0.1, 0.5, 0.4]))


@pytest.mark.parametrize("labels, message", [
    (np.full((2, 3), 5.0), r"row 0 is \[5.0, 5.0, 5.0\]"),
    (np.array([[1.0, 0, 0], [np.nan, 1, 0]]), r"row 1 is \[nan, 1.0, 0.0\]"),
    (np.array([[1.0, 0, 0], [-1.0, 1, 1]]), "row 1 is"),
])
def test_one_hot_labels_must_be_distributions(labels, message):
    scores = tf.Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="logit_cross_entropy: one-hot labels must be rows of non-negative "
                                         "numbers that sum to 1; " + message):
        tf.logit_cross_entropy(scores, labels)


def test_soft_labels_are_accepted():
    scores = tf.Tensor(np.zeros((1, 4), np.float32))
    assert tf.logit_cross_entropy(scores, np.array([[0.25, 0.25, 0.5, 0.0]])).item() == pytest.approx(math.log(4))


@pytest.mark.parametrize("value, ok", [(3, True), (np.int16(3), True), (3.0, False), (True, False), ("3", False)])
def test_what_counts_as_an_integer(value, ok):
    assert checks.is_integer(value) is ok
