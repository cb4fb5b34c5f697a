"""gradcheck itself: it passes correct gradients and catches wrong ones."""
import pytest

import tinyflux as tf
from tinyflux.tensor import Function


class WrongSquare(Function):
    """y = x**2 with a deliberately wrong backward (gx = gy * x instead of 2 * gy * x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy, needs):
        return (gy * self.x,)


@pytest.mark.parametrize("size", [5, 1000])  # full Jacobian path and random-direction path
def test_gradcheck_catches_a_wrong_backward(xp, rng, size):
    x = xp.asarray(rng.standard_normal(size))
    with pytest.raises(tf.GradcheckError, match="gradcheck failed for input 0"):
        tf.gradcheck(lambda x: WrongSquare().apply(x), x)


@pytest.mark.parametrize("size", [5, 1000])
def test_gradcheck_accepts_a_right_backward(xp, rng, size):
    x = xp.asarray(rng.standard_normal(size))
    assert tf.gradcheck(lambda x: x * x, x)


def test_gradcheck_catches_a_missing_gradient(xp, rng):
    x = xp.asarray(rng.standard_normal(4))
    # the second input influences the output, but detach() hides it from backward
    with pytest.raises(tf.GradcheckError, match="input 1"):
        tf.gradcheck(lambda a, b: a * b.detach(), x, x + 1)


def test_gradcheck_passes_integer_inputs_through(xp, rng):
    labels = xp.asarray([0, 2])
    assert tf.gradcheck(tf.logit_cross_entropy, xp.asarray(rng.standard_normal((2, 3))), labels)
