"""Layers: shapes, parameters, reprs, gradients through the layers, bad input."""
import re

import numpy as np
import pytest

import tinyflux as tf
from tinyflux import nn
from tinyflux.models import mnist_convnet as mnist_model
from conftest import move_to


def test_mnist_model_parameters_in_layer_order():
    model = mnist_model()
    shapes = [p.shape for p in model.parameters()]
    assert shapes == [(16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (32, 32, 3, 3), (32,), (10, 288), (10,)]
    assert model.num_parameters() == 16_938
    names = [name for name, _ in model.named_parameters()]
    assert names[:2] == ["0.weight", "0.bias"] and names[-1] == "7.bias"


def test_mnist_model_repr_mirrors_constructor():
    text = repr(mnist_model())
    assert "Conv((3, 3), 1 => 16, relu, pad=1)," in text
    assert "MaxPool((2, 2))," in text and "flatten," in text
    assert "Dense(288 => 10)," in text and "# 2_890 parameters" in text
    assert text.endswith("# Total: 8 arrays, 16_938 parameters")
    assert repr(nn.Conv((3, 3, 3), 2, 4, stride=2)) == "Conv((3, 3, 3), 2 => 4, stride=2)  # 220 parameters"


def test_summary_lists_output_shapes_and_parameter_counts():
    summary = mnist_model().summary((1, 28, 28))
    assert [dims for _, dims, _ in summary.rows if dims] == [
        (16, 28, 28), (16, 14, 14), (32, 14, 14), (32, 7, 7), (32, 7, 7), (32, 3, 3), (288,), (10,)]
    assert [count for _, _, count in summary.rows] == [0, 160, 0, 4_640, 0, 9_248, 0, 0, 2_890, 0]
    assert (summary.arrays, summary.parameters) == (8, 16_938)
    text = repr(summary)
    assert re.search(r"\n  Conv\(\(3, 3\), 1 => 16, relu, pad=1\) +\(N, 16, 28, 28\) +160\n", text)
    assert re.search(r"\n  flatten +\(N, 288\)\n", text)
    assert text.splitlines()[1].split() == ["input", "(N,", "1,", "28,", "28)"]
    assert text.endswith("Total: 8 arrays, 16_938 parameters")


def test_summary_of_a_video_model_and_of_bad_shapes():
    model = nn.Chain(nn.Conv((3, 3, 3), 1, 4, tf.relu, pad=1), nn.MaxPool((2, 2, 2)), nn.flatten,
                     nn.Dense(4 * 8 * 16 * 16, 3))
    assert model.summary((1, 16, 32, 32)).rows[2][1] == (4, 8, 16, 16)
    with pytest.raises(ValueError, match="Dense"):  # the layer that cannot take the shape says so
        model.summary((1, 8, 32, 32))
    with pytest.raises(ValueError, match=r"without the batch.*got \(0, 28\)"):
        model.summary((0, 28))
    double = nn.Dense(3, 2)
    double.weight.data, double.bias.data = double.weight.data.astype(np.float64), double.bias.data.astype(np.float64)
    assert double.summary(3).rows == [("Dense(3 => 2)", (2,), 8)]  # float64 weights get a float64 input


def test_mnist_model_output_shape_and_dtype():
    y = mnist_model()(tf.Tensor(np.zeros((3, 1, 28, 28), dtype=np.float32)))
    assert y.shape == (3, 10) and y.dtype == np.float32


def test_initialisation_is_glorot_uniform_with_zero_bias():
    tf.seed(0)
    layer = nn.Conv((3, 3), 16, 32)
    limit = np.sqrt(6 / (16 * 9 + 32 * 9))
    w = layer.weight.data
    assert w.dtype == np.float32 and np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    assert abs(w.std() - limit / np.sqrt(3)) < 0.05 * limit  # the std of U(-a, a) is a / sqrt(3)
    np.testing.assert_array_equal(layer.bias.data, 0)


def test_seed_makes_models_repeatable():
    tf.seed(7)
    a = mnist_model()
    tf.seed(7)
    b = mnist_model()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def _to_float64(model, xp):
    for p in model.parameters():
        p.data = xp.asarray(p.data, dtype=np.float64)
    return model


def test_small_model_gradients_in_float64(xp, rng):
    """The whole chain (conv, relu, pool, flatten, dense, loss) against finite differences."""
    model = _to_float64(nn.Chain(nn.Conv((3, 3), 2, 3, tf.relu, pad=1), nn.MaxPool((2, 2)),
                                 nn.flatten, nn.Dense(3 * 2 * 2, 4)), xp)
    conv, dense = model[0], model[3]
    x = xp.asarray(rng.standard_normal((2, 2, 5, 4)))
    labels = xp.asarray([1, 3])

    def loss(x, conv_w, conv_b, dense_w, dense_b):
        # gradcheck hands in float64 copies of the weights; install them in the layers
        conv.weight, conv.bias, dense.weight, dense.bias = conv_w, conv_b, dense_w, dense_b
        return tf.logit_cross_entropy(model(x), labels)

    assert tf.gradcheck(loss, x, *[p.data for p in model.parameters()])


def test_dense_and_conv3d_layers(xp, rng):
    dense = nn.Dense(4, 3, tf.relu)
    dense.weight.data, dense.bias.data = xp.asarray(dense.weight.data), xp.asarray(dense.bias.data)
    y = dense(xp.asarray(rng.standard_normal((5, 4)), dtype=np.float32))
    assert y.shape == (5, 3) and float(y.data.min()) >= 0
    conv3d = move_to(xp, nn.Conv((3, 3, 3), 1, 2, pad=1))
    video = xp.zeros((2, 1, 4, 8, 8), dtype=np.float32)
    assert conv3d(video).shape == (2, 2, 4, 8, 8)
    assert nn.MaxPool((2, 2, 2))(conv3d(video)).shape == (2, 2, 2, 4, 4)


def test_layer_errors_name_the_layer():
    model = mnist_model()
    with pytest.raises(ValueError, match=r"Conv\(\(3, 3\), 1 => 16, relu, pad=1\): expected input with 1 channel, "
                                         r"got 3 \(shape \(8, 3, 28, 28\)\)"):
        model(np.zeros((8, 3, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Conv\(.*\): expected a 4-D input \(N, C, H, W\), got shape \(28, 28\)"):
        model(np.zeros((28, 28), dtype=np.float32))
    with pytest.raises(TypeError, match=r"Conv\(.*\): expected float32 input like the weights, got float64"):
        model(np.zeros((2, 1, 28, 28)))
    with pytest.raises(ValueError, match=r"Conv\(.*\): empty batch"):
        model(np.zeros((0, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Dense\(288 => 10\): expected input of shape \(N, 288\), got \(2, 512\)"):
        model(np.zeros((2, 1, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"MaxPool\(\(2, 2\)\): input spatial size \(1, 1\) is smaller"):
        nn.MaxPool((2, 2))(np.zeros((1, 1, 1, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="kernel must have 1, 2 or 3 sizes"):
        nn.Conv((3, 3, 3, 3), 1, 1)
    with pytest.raises(TypeError, match="layer 1 is not callable"):
        nn.Chain(nn.Dense(2, 2), 5)


def test_gpu_without_a_gpu_warns_once_and_returns_the_object(caplog):
    if tf.backends.cupy_available():
        pytest.skip("a GPU is present: tf.gpu moves for real (covered by the cupy backend tests)")
    model = mnist_model()
    with caplog.at_level("WARNING", logger="tinyflux"):
        assert tf.gpu(model) is model
        x = np.zeros(3)
        assert tf.gpu(x) is x
    assert sum("no usable CUDA GPU" in r.message for r in caplog.records) <= 1


def test_cpu_returns_numpy(xp):
    t = tf.Tensor(xp.ones(3), requires_grad=True)
    moved = tf.cpu(t)
    assert isinstance(moved.data, np.ndarray) and moved.requires_grad
    model = tf.cpu(mnist_model())
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    with pytest.raises(TypeError, match="cannot move a str"):
        tf.cpu("weights")


def test_mixed_backends_are_refused(xp):
    if xp is np:
        pytest.skip("needs another array library than NumPy: a NumPy input to a model on another device")
    model = move_to(xp, mnist_model())
    name = tf.backends.backend_name(model[0].weight.data)
    with pytest.raises(TypeError, match=f"input is a numpy array but the weights are {name}"):
        model(np.zeros((1, 1, 28, 28), dtype=np.float32))


def test_sizes_below_one_are_refused():
    with pytest.raises(ValueError, match="Conv stride: every value must be at least 1, got 0"):
        nn.Conv((3, 3), 1, 1, stride=0)
    with pytest.raises(ValueError, match="Conv pad: every value must be at least 0, got -1"):
        nn.Conv((3, 3), 1, 1, pad=-1)
    with pytest.raises(ValueError, match="Conv kernel: every value must be at least 1"):
        nn.Conv((0, 3), 1, 1)
    with pytest.raises(ValueError, match="MaxPool window: every value must be at least 1"):
        nn.MaxPool((2, 0))
