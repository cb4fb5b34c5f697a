"""Optimizers against the textbook update formulas."""
import numpy as np
import pytest

import tinyflux as tf
from conftest import to_numpy
from tinyflux import optim


def test_adam_matches_the_paper_for_a_few_steps(xp, rng):
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(4)]
    p = tf.Tensor(xp.asarray(p0), requires_grad=True)
    opt = optim.Adam([p], lr=0.01, betas=(0.8, 0.9), eps=1e-6)
    expected, m, v = p0.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, start=1):
        p.grad = xp.asarray(g)
        opt.step()
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        expected -= 0.01 * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose(to_numpy(p.data), expected, rtol=1e-12, atol=1e-15)
    assert opt.t == 4


def test_adam_learning_rate_can_change_between_steps(xp):
    p = tf.Tensor(xp.zeros(1), requires_grad=True)
    opt = optim.Adam([p], lr=1.0)
    p.grad = xp.ones(1)
    opt.step()  # the first Adam step moves by lr (m_hat / sqrt(v_hat) = 1)
    np.testing.assert_allclose(to_numpy(p.data), [-1.0], rtol=1e-6)
    opt.lr = 0.1
    opt.step()
    np.testing.assert_allclose(to_numpy(p.data), [-1.1], rtol=1e-6)


def test_sgd_with_and_without_momentum(xp):
    p = tf.Tensor(xp.asarray([1.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.5)
    p.grad = xp.asarray([2.0])
    opt.step()
    np.testing.assert_allclose(to_numpy(p.data), [0.0])
    q = tf.Tensor(xp.asarray([0.0]), requires_grad=True)
    opt = optim.SGD([q], lr=1.0, momentum=0.5)
    for _ in range(2):
        q.grad = xp.asarray([1.0])
        opt.step()
    np.testing.assert_allclose(to_numpy(q.data), [-2.5])  # steps of 1, then 1 + 0.5


def test_parameters_without_gradient_are_left_alone_and_zero_grad_clears(xp):
    a = tf.Tensor(xp.ones(2), requires_grad=True)
    b = tf.Tensor(xp.ones(2), requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    (a * 3).sum().backward()
    opt.step()
    assert float(a.data[0]) < 1 and float(b.data[0]) == 1
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_optimizer_input_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="parameter 0 is a ndarray, expected a Tensor"):
        optim.SGD([np.zeros(2)])
