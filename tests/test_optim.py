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


def reference_adam(params0, grads_per_step, lr, b1=0.9, b2=0.999, eps=1e-8):
    """The paper's Adam, one parameter at a time, in float64 NumPy."""
    params = [p.astype(np.float64) for p in params0]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for p, g, mi, vi in zip(params, grads, m, v):
            mi[...] = b1 * mi + (1 - b1) * g
            vi[...] = b2 * vi + (1 - b2) * g * g
            p -= lr * (mi / (1 - b1 ** t)) / (np.sqrt(vi / (1 - b2 ** t)) + eps)
    return params


def test_adam_keeps_all_parameters_in_one_flat_buffer_and_updates_them_together(xp, rng):
    shapes = [(4, 1, 3, 3), (4,), (3, 5), (), (3,)]
    params0 = [rng.standard_normal(s) for s in shapes]
    grads_per_step = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    params = [tf.Tensor(xp.asarray(p), requires_grad=True) for p in params0]
    opt = optim.Adam(params, lr=0.05)
    (group,) = opt.groups
    buffer = group.parameters
    assert buffer.data.shape == (sum(int(np.prod(s)) for s in shapes),)
    for p, p0 in zip(params, params0):
        assert p.shape == p0.shape
        np.testing.assert_array_equal(to_numpy(p.data), p0)
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = xp.asarray(g)
        opt.step()
    for p, expected in zip(params, reference_adam(params0, grads_per_step, lr=0.05)):
        np.testing.assert_allclose(to_numpy(p.data), expected, rtol=1e-12, atol=1e-15)
    # every parameter is a view of the buffer: a write to the buffer shows through each of them.
    # (Checked by writing, not with xp.shares_memory, which CuPy 14 answers False for a 0-d view.)
    buffer.data[...] = xp.arange(buffer.data.size, dtype=buffer.data.dtype)
    start = 0
    for p, shape in zip(params, shapes):
        size = int(np.prod(shape))
        np.testing.assert_array_equal(to_numpy(p.data), np.arange(start, start + size).reshape(shape))
        start += size


def test_adam_keeps_one_buffer_per_dtype(rng):
    a = tf.Tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    b = tf.Tensor(rng.standard_normal(2), requires_grad=True)
    a0, b0 = a.data.copy(), b.data.copy()
    opt = optim.Adam([a, b], lr=0.1)
    assert sorted(group.parameters.data.dtype.name for group in opt.groups) == ["float32", "float64"]
    a.grad, b.grad = np.ones(3, np.float32), np.ones(2)
    opt.step()
    assert a.data.dtype == np.float32 and b.data.dtype == np.float64
    np.testing.assert_allclose(a.data, a0 - 0.1, rtol=1e-6)  # a first Adam step moves each weight by lr
    np.testing.assert_allclose(b.data, b0 - 0.1, rtol=0, atol=1e-8)  # by lr * g / (|g| + eps), to eps


def test_adam_takes_back_a_parameter_whose_array_was_replaced(rng):
    a = tf.Tensor(np.zeros(3), requires_grad=True)
    b = tf.Tensor(np.zeros(2), requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.data = np.full(3, 5.0)  # as tf.gpu or a gradient check do: a new array, outside the buffer
    a.grad, b.grad = np.ones(3), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 4.9)  # the new values, then one step
    np.testing.assert_allclose(opt.groups[0].parameters.data[:3], 4.9)
    a.data = np.zeros(4)
    with pytest.raises(ValueError, match=r"parameter 0 is now numpy float64\(4,\), but the optimizer was built "
                                         r"for numpy float64\(3,\)"):
        opt.step()


def test_a_parameter_passed_twice_is_refused():
    a = tf.Tensor(np.zeros(3), requires_grad=True)
    with pytest.raises(ValueError, match="parameter 1 is parameter 0 again"):
        optim.Adam([a, a])


def test_adams_numbers_stand_where_the_backends_read_them():
    """optim.ADAM_NUMBERS is the layout of Adam's hyper array; NumpyOps (and kernels.cu) read it by position."""
    p = tf.Tensor(np.ones(3, np.float32), requires_grad=True)
    opt = optim.Adam([p], lr=0.01, betas=(0.8, 0.9), eps=1e-6)
    hyper = opt.groups[0].hyper
    assert dict(zip(optim.ADAM_NUMBERS, hyper.tolist())) == {"lr": 0.01, "beta1": 0.8, "beta2": 0.9, "eps": 1e-6,
                                                              "t": 0.0}
    tf.backends.NUMPY_OPS.count_step(hyper)
    opt.lr = 0.5
    assert opt.t == 1 and hyper.tolist() == [0.5, 0.8, 0.9, 1e-6, 1.0]
