"""ReLU, softmax, log-softmax, logit cross-entropy, onehot/onecold."""
import numpy as np
import pytest

import tinyflux as tf
from conftest import to_numpy


def test_relu_forward_and_derivative_at_zero(xp):
    x = tf.Tensor(xp.asarray([-2.0, 0.0, 3.0]), requires_grad=True)
    y = tf.relu(x)
    np.testing.assert_array_equal(to_numpy(y.data), [0.0, 0.0, 3.0])
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0.0, 0.0, 1.0])  # ReLU'(0) = 0


def test_relu_gradcheck(xp, rng):
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    assert tf.gradcheck(tf.relu, xp.asarray(x))


def test_softmax_and_log_softmax_against_numpy(xp, rng):
    x = rng.standard_normal((4, 6))
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(to_numpy(tf.softmax(tf.Tensor(xp.asarray(x))).data), p, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(tf.log_softmax(tf.Tensor(xp.asarray(x))).data), np.log(p), rtol=1e-12)
    assert tf.gradcheck(tf.softmax, xp.asarray(x))
    assert tf.gradcheck(tf.log_softmax, xp.asarray(x))


def test_cross_entropy_value_with_int_and_onehot_labels(xp, rng):
    x = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(5), labels].mean()
    loss_int = tf.logit_cross_entropy(tf.Tensor(xp.asarray(x)), xp.asarray(labels))
    loss_hot = tf.logit_cross_entropy(tf.Tensor(xp.asarray(x)), tf.onehot(xp.asarray(labels), 4))
    assert float(loss_int.data) == pytest.approx(expected, rel=1e-12)
    assert float(loss_hot.data) == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_gradcheck(xp, rng):
    labels = xp.asarray([2, 0, 1])
    assert tf.gradcheck(tf.logit_cross_entropy, xp.asarray(rng.standard_normal((3, 4))), labels)


def test_cross_entropy_is_finite_for_huge_logits(xp):
    x = tf.Tensor(xp.asarray([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], dtype=np.float32), requires_grad=True)
    loss = tf.logit_cross_entropy(x, xp.asarray([1, 0]))
    loss.backward()
    assert np.isfinite(float(loss.data)) and float(loss.data) == pytest.approx(2e4, rel=1e-6)
    assert np.isfinite(to_numpy(x.grad)).all()


def test_cross_entropy_bad_labels(xp):
    x = tf.Tensor(xp.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got values from 0 to 3"):
        tf.logit_cross_entropy(x, xp.asarray([0, 3]))
    with pytest.raises(ValueError, match="must lie in"):
        tf.logit_cross_entropy(x, xp.asarray([-1, 0]))
    with pytest.raises(TypeError, match="integer class labels expected, got dtype float"):
        tf.logit_cross_entropy(x, xp.asarray([0.0, 1.0]))
    with pytest.raises(ValueError, match="2 rows of scores but 3 labels"):
        tf.logit_cross_entropy(x, xp.asarray([0, 1, 2]))
    with pytest.raises(ValueError, match="one-hot labels of shape"):
        tf.logit_cross_entropy(x, xp.zeros((2, 4)))
    with pytest.raises(ValueError, match="empty batch"):
        tf.logit_cross_entropy(tf.Tensor(xp.zeros((0, 3))), xp.asarray([], dtype=np.int64))


def test_onehot_and_onecold_are_inverse(xp):
    labels = xp.asarray([3, 0, 2, 2])
    hot = tf.onehot(labels, 4)
    assert hot.shape == (4, 4) and hot.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(hot.sum(axis=1)), np.ones(4))
    np.testing.assert_array_equal(to_numpy(tf.onecold(hot)), to_numpy(labels))
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        tf.onehot(xp.asarray([4]), 4)


def test_bias_relu_matches_relu_of_sum_and_gradchecks(xp, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    b = rng.standard_normal(3)
    x[np.abs(x + b.reshape(1, 3, 1, 1)) < 1e-3] = 0.5  # keep away from the kink
    y = tf.functional.bias_relu(tf.Tensor(xp.asarray(x)), tf.Tensor(xp.asarray(b)))
    np.testing.assert_allclose(to_numpy(y.data), np.maximum(x + b.reshape(1, 3, 1, 1), 0))
    assert tf.gradcheck(tf.functional.bias_relu, xp.asarray(x), xp.asarray(b))
