"""Autograd engine and the elementwise / matrix / shape ops."""
import numpy as np
import pytest

import tinyflux as tf
from conftest import to_numpy


def test_backward_of_a_small_expression(xp):
    a = tf.Tensor(xp.asarray([2.0, 3.0]), requires_grad=True)
    b = tf.Tensor(xp.asarray([5.0, 7.0]), requires_grad=True)
    (a * b + a / b - b).sum().backward()
    np.testing.assert_allclose(to_numpy(a.grad), [5 + 1 / 5, 7 + 1 / 7])
    np.testing.assert_allclose(to_numpy(b.grad), [2 - 2 / 25 - 1, 3 - 3 / 49 - 1])


def test_value_used_twice_gets_the_sum_of_both_gradients(xp):
    a = tf.Tensor(xp.asarray([3.0]), requires_grad=True)
    y = a * a + a  # dy/da = 2a + 1
    y.backward(xp.asarray([1.0]))
    np.testing.assert_allclose(to_numpy(a.grad), [7.0])


def test_gradients_accumulate_until_cleared(xp):
    a = tf.Tensor(xp.asarray([1.0]), requires_grad=True)
    (a * 2).sum().backward()
    (a * 3).sum().backward()
    np.testing.assert_allclose(to_numpy(a.grad), [5.0])


def test_broadcast_gradients_are_summed_back(xp, rng):
    x = rng.standard_normal((4, 3))
    b = rng.standard_normal(3)
    assert tf.gradcheck(lambda x, b: x + b, xp.asarray(x), xp.asarray(b))
    assert tf.gradcheck(lambda x, b: x * b - b / (x * x + 1), xp.asarray(x), xp.asarray(b))


@pytest.mark.parametrize("op", [
    lambda a, b: a @ b,
    lambda a, b: (a @ b).T,
    lambda a, b: (a.reshape(2, 6) ** 2).sum(axis=0) * 1.5,
    lambda a, b: a.transpose(1, 0).mean(axis=1, keepdims=True) + b.sum(),
    lambda a, b: (-a).exp().sum(axis=1) - (b * b + 1).log().mean(),
    lambda a, b: 2.0 - a @ b / 3.0,
])
def test_op_gradients(xp, rng, op):
    a = xp.asarray(rng.standard_normal((3, 4)))
    b = xp.asarray(rng.standard_normal((4, 2)))
    assert tf.gradcheck(op, a, b)


def test_deep_graph_does_not_hit_the_recursion_limit(xp):
    x = tf.Tensor(xp.asarray([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.backward(xp.asarray([1.0]))
    np.testing.assert_allclose(to_numpy(x.grad), [1.0])


def test_no_grad_records_nothing(xp):
    a = tf.Tensor(xp.asarray([1.0]), requires_grad=True)
    with tf.no_grad():
        y = a * 2
    assert y.creator is None and not y.requires_grad
    z = a * 2
    assert z.creator is not None


def test_float32_stays_float32_with_python_numbers(xp):
    a = tf.Tensor(xp.ones(3, dtype=np.float32), requires_grad=True)
    y = (a * 0.5 + 1.0) / 3.0 - 2.0
    assert y.dtype == np.float32
    y.sum().backward()
    assert a.grad.dtype == np.float32


def test_backward_needs_a_scalar_or_a_gradient(xp):
    a = tf.Tensor(xp.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="needs a scalar"):
        (a * 2).backward()
    with pytest.raises(ValueError, match="does not match"):
        (a * 2).backward(xp.ones(4))


def test_matmul_shape_errors(xp):
    with pytest.raises(ValueError, match="inner sizes differ"):
        tf.Tensor(xp.ones((2, 3))) @ tf.Tensor(xp.ones((2, 3)))


def test_tensor_properties(xp):
    t = tf.Tensor(xp.zeros((2, 3), dtype=np.float32))
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.ndim == 2 and t.size == 6 and t.grad is None
    assert tf.Tensor([1.0, 2.0]).dtype == np.float32  # Python floats become float32


def test_a_gpu_array_is_kept_as_it_is(monkeypatch):
    """CuPy arrays refuse np.asarray (CuPy 14 raises TypeError, and has no __array_namespace__):
    Tensor must recognise them as GPU arrays and keep them. A stand-in class plays CuPy's ndarray."""
    import types

    from tinyflux.backends import arrays

    class GpuArray:
        dtype, shape = np.dtype(np.float32), (2,)

        def __array__(self, *args, **kwargs):
            raise TypeError("Implicit conversion to a NumPy array is not allowed")

    monkeypatch.setattr(arrays, "cupy", types.SimpleNamespace(ndarray=GpuArray))
    array = GpuArray()
    assert tf.Tensor(array).data is array
