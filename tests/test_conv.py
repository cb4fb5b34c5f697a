"""Convolution and max-pooling: forward against nested loops, backward against finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyflux as tf
from conftest import to_numpy
from reference import conv_reference, maxpool_reference

CONV_CASES = [
    # (input spatial sizes, kernel, stride, pad)
    ((7,), (3,), 1, 0),
    ((8,), (2,), 2, 1),
    ((5, 6), (3, 3), 1, 1),
    ((7, 5), (3, 2), 2, 0),
    ((6, 7), (2, 3), 2, 1),
    ((5, 4, 6), (3, 3, 3), 1, 1),
    ((5, 5, 4), (2, 3, 2), 2, 0),
    ((4, 5, 3), (3, 2, 2), (1, 2, 1), (0, 1, 1)),
]


def _tuple(v, d):
    return (v,) * d if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("sizes,kernel,stride,pad", CONV_CASES)
def test_conv_forward_matches_nested_loops(xp, rng, sizes, kernel, stride, pad):
    d = len(kernel)
    x = rng.standard_normal((2, 3) + sizes)
    w = rng.standard_normal((4, 3) + kernel)
    b = rng.standard_normal(4)
    y = tf.conv(tf.Tensor(xp.asarray(x)), tf.Tensor(xp.asarray(w)), tf.Tensor(xp.asarray(b)), stride, pad)
    expected = conv_reference(x, w, b, _tuple(stride, d), _tuple(pad, d))
    assert y.shape == expected.shape
    np.testing.assert_allclose(to_numpy(y.data), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sizes,kernel,stride,pad", CONV_CASES)
def test_conv_gradients(xp, rng, sizes, kernel, stride, pad):
    x = xp.asarray(rng.standard_normal((2, 2) + sizes))
    w = xp.asarray(rng.standard_normal((3, 2) + kernel))
    b = xp.asarray(rng.standard_normal(3))
    assert tf.gradcheck(lambda x, w, b: tf.conv(x, w, b, stride, pad), x, w, b)


def test_conv_float32_runs_in_float32(xp, rng):
    x = tf.Tensor(xp.asarray(rng.standard_normal((2, 1, 5, 5)), dtype=np.float32))
    w = tf.Tensor(xp.asarray(rng.standard_normal((2, 1, 3, 3)), dtype=np.float32), requires_grad=True)
    y = tf.conv(x, w, pad=1)
    y.sum().backward()
    assert y.dtype == np.float32 and w.grad.dtype == np.float32


def test_conv_output_size_of_mnist_model(xp):
    x = tf.Tensor(xp.zeros((1, 1, 28, 28), dtype=np.float32))
    w = tf.Tensor(xp.zeros((16, 1, 3, 3), dtype=np.float32))
    assert tf.conv(x, w, pad=1).shape == (1, 16, 28, 28)  # pad 1 keeps 28x28 for a 3x3 kernel
    assert tf.conv(x, w).shape == (1, 16, 26, 26)
    assert tf.conv(x, w, stride=2).shape == (1, 16, 13, 13)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 3), o=st.integers(1, 3), d=st.integers(1, 3),
       size=st.integers(1, 6), k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_conv_random_shapes_match_nested_loops(n, c, o, d, size, k, stride, pad, seed):
    if size + 2 * pad < k:
        return  # no output position; the error is tested separately
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, c) + (size,) * d)
    w = rng.uniform(-1, 1, (o, c) + (k,) * d)
    y = tf.conv(tf.Tensor(x), tf.Tensor(w), None, stride, pad)
    expected = conv_reference(x, w, None, (stride,) * d, (pad,) * d)
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-10)


# -- max-pooling ------------------------------------------------------------------

POOL_CASES = [((7,), (2,), None), ((6, 6), (2, 2), None), ((7, 7), (2, 2), None), ((5, 7), (3, 2), (1, 2)),
              ((4, 5, 6), (2, 2, 2), None), ((5, 5, 5), (3, 2, 2), (2, 1, 2))]


@pytest.mark.parametrize("sizes,window,stride", POOL_CASES)
def test_maxpool_forward_and_backward_match_reference(xp, rng, sizes, window, stride):
    x = -rng.uniform(1, 2, (2, 3) + sizes)  # all negative: a pool padded with zeros would be wrong
    stride_t = window if stride is None else stride
    expected, argmax = maxpool_reference(x, window, stride_t)
    xt = tf.Tensor(xp.asarray(x), requires_grad=True)
    y = tf.maxpool(xt, window, stride)
    np.testing.assert_array_equal(to_numpy(y.data), expected)
    gy = rng.standard_normal(expected.shape)
    y.backward(xp.asarray(gy))
    expected_gx = np.zeros_like(x)
    for out_index, in_index in argmax.items():
        expected_gx[in_index] += gy[out_index]
    np.testing.assert_allclose(to_numpy(xt.grad), expected_gx, rtol=1e-12)


def test_maxpool_floors_sizes_that_do_not_divide(xp):
    x = tf.Tensor(xp.zeros((1, 32, 7, 7), dtype=np.float32))
    assert tf.maxpool(x, (2, 2)).shape == (1, 32, 3, 3)


def test_maxpool_tie_sends_gradient_to_exactly_one_element(xp):
    x = tf.Tensor(xp.ones((1, 1, 4, 4)), requires_grad=True)  # every window is one big tie
    tf.maxpool(x, (2, 2)).sum().backward()
    gx = to_numpy(x.grad)
    windows = gx.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)  # (2, 2, 2, 2) -> (window, element)
    np.testing.assert_array_equal(windows.sum(axis=1), np.ones(4))
    np.testing.assert_array_equal((windows != 0).sum(axis=1), np.ones(4))


@pytest.mark.parametrize("sizes,window,stride", POOL_CASES)
def test_maxpool_gradcheck(xp, rng, sizes, window, stride):
    # distinct values (a shuffled grid 0.01 apart) so eps = 1e-6 never flips a maximum
    count = 2 * 2 * int(np.prod(sizes))
    x = xp.asarray(rng.permutation(count).reshape((2, 2) + sizes) * 0.01 - 1.0)
    assert tf.gradcheck(lambda x: tf.maxpool(x, window, stride), x)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 3), size=st.integers(1, 7), window=st.integers(1, 3), stride=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_maxpool_random_shapes_match_reference(d, size, window, stride, seed):
    if size < window:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 3, (2, 2) + (size,) * d).astype(np.float64)  # small ints: plenty of ties
    xt = tf.Tensor(x, requires_grad=True)
    y = tf.maxpool(xt, (window,) * d, stride)
    expected, argmax = maxpool_reference(x, (window,) * d, (stride,) * d)
    np.testing.assert_array_equal(y.data, expected)
    y.sum().backward()
    expected_gx = np.zeros_like(x)
    for in_index in argmax.values():
        expected_gx[in_index] += 1
    np.testing.assert_array_equal(xt.grad, expected_gx)


# -- bad input ---------------------------------------------------------------------

def test_conv_errors_name_what_was_expected(xp):
    w = tf.Tensor(xp.zeros((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="expected a 4-D input"):
        tf.conv(tf.Tensor(xp.zeros((3, 5, 5))), w)
    with pytest.raises(ValueError, match="expected input with 3 channels, got 2"):
        tf.conv(tf.Tensor(xp.zeros((1, 2, 5, 5))), w)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        tf.conv(tf.Tensor(xp.zeros((1, 3, 2, 2))), w)
    with pytest.raises(ValueError, match="empty batch"):
        tf.conv(tf.Tensor(xp.zeros((0, 3, 5, 5))), w)
    with pytest.raises(TypeError, match="expected float64 input like the weights, got float32"):
        tf.conv(tf.Tensor(xp.zeros((1, 3, 5, 5), dtype=np.float32)), w)
    with pytest.raises(ValueError, match="smaller than the window"):
        tf.maxpool(tf.Tensor(xp.zeros((1, 1, 1, 5))), (2, 2))


# -- the column builders ---------------------------------------------------------------

@pytest.mark.parametrize("sizes,kernel,stride,pad", CONV_CASES)
def test_col2im_is_the_adjoint_of_im2col(rng, sizes, kernel, stride, pad):
    """<im2col(x), g> == <x, col2im(g)> for every x and g: the defining property of a transpose."""
    from tinyflux.functional.convolution import col2im, col2im_shifted, im2col, im2col_shifted
    d = len(kernel)
    stride, pad = _tuple(stride, d), _tuple(pad, d)
    x = rng.standard_normal((2, 3) + sizes)
    builders = [(lambda x: im2col(x, kernel, stride, pad), lambda g: col2im(g, x.shape, kernel, stride, pad))]
    if all(s == 1 for s in stride):
        builders.append((lambda x: im2col_shifted(x, kernel, pad)[0],
                         lambda g: col2im_shifted(g, x.shape, kernel, pad)))
    for forward, adjoint in builders:
        col = forward(x)
        g = rng.standard_normal(col.shape)
        assert np.vdot(col, g) == pytest.approx(np.vdot(x, adjoint(g)), rel=1e-10)


def test_chain_pools_before_bias_and_relu_without_changing_results(rng):
    """Chain computes relu(pool(conv(x)) + b) instead of pool(relu(conv(x) + b)): same values and gradients."""
    tf.seed(3)
    chain = tf.nn.Chain(tf.nn.Conv((3, 3), 2, 4, tf.relu, pad=1), tf.nn.MaxPool((2, 2)))
    for p in chain.parameters():
        p.data = p.data.astype(np.float64)
    chain[0].bias.data = rng.standard_normal(4)
    x = tf.Tensor(rng.standard_normal((3, 2, 7, 6)))
    fused = chain(x)
    fused.sum().backward()
    fused_grads = [p.grad for p in chain.parameters()]
    for p in chain.parameters():
        p.grad = None
    plain = chain[1](chain[0](x))  # layer by layer: no fusion
    plain.sum().backward()
    np.testing.assert_allclose(fused.data, plain.data, rtol=1e-12)
    for a, p in zip(fused_grads, chain.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-12)


# -- a convolution and its pooling as one op ------------------------------------------

CONV_POOL_CASES = [
    # (input spatial sizes, kernel, pad, pooling window): the windows also tile the output with stride = window
    ((28, 28), (3, 3), (1, 1), (2, 2)),  # MNIST's first layer
    ((7, 7), (3, 3), (1, 1), (2, 2)),  # 7x7 pooled to 3x3: the last row and column belong to no window
    ((9, 8), (3, 2), (0, 1), (3, 2)),
    ((10,), (3,), (1,), (2,)),
    ((11,), (5,), (2,), (3,)),
    ((6, 7, 5), (3, 3, 3), (1, 1, 1), (2, 2, 2)),
    ((5, 6), (1, 1), (0, 0), (2, 3)),
    ((8, 8), (3, 3), (2, 0), (1, 2)),
    ((4, 4), (4, 4), (0, 0), (1, 1)),
    ((3, 5), (2, 2), (3, 0), (4, 2)),  # more padding than input on one side
]


def _conv_then_pool(x, w, pad, window):
    return tf.maxpool(tf.conv(x, w, None, 1, pad), window)


@pytest.mark.parametrize("sizes,kernel,pad,window", CONV_POOL_CASES)
@pytest.mark.parametrize("values", ["random", "ties"])
def test_conv_maxpool_equals_conv_then_maxpool(xp, rng, sizes, kernel, pad, window, values):
    """Same outputs and gradients as the two ops; with small integers many windows tie, and each
    tie must still send its gradient to the same (first) element."""
    if values == "ties":
        x = rng.integers(-1, 2, (2, 3) + sizes).astype(np.float64)
        w = rng.integers(-1, 2, (4, 3) + kernel).astype(np.float64)
    else:
        x, w = rng.standard_normal((2, 3) + sizes), rng.standard_normal((4, 3) + kernel)
    results = []
    for op in (tf.conv_maxpool, _conv_then_pool):
        xt, wt = tf.Tensor(xp.asarray(x), requires_grad=True), tf.Tensor(xp.asarray(w), requires_grad=True)
        y = op(xt, wt, pad, window)
        y.backward(xp.asarray(np.arange(y.size, dtype=np.float64).reshape(y.shape) % 7 - 3))
        results.append([to_numpy(a) for a in (y.data, xt.grad, wt.grad)])
    (y, gx, gw), (y_ref, gx_ref, gw_ref) = results
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sizes,kernel,pad,window", CONV_POOL_CASES[:6])
def test_conv_maxpool_with_bias_relu_equals_pooling_relu_of_conv(xp, rng, sizes, kernel, pad, window):
    """bias_relu=b: relu(maxpool(conv(x, w)) + b), the same as maxpool(relu(conv(x, w, b))), gradients too."""
    x, w = rng.standard_normal((2, 3) + sizes), rng.standard_normal((4, 3) + kernel)
    b = np.array([0.5, -1.0, 0.0, -30.0])  # the last channel is all zeros after the ReLU
    results = []
    for fused in (True, False):
        xt, wt, bt = (tf.Tensor(xp.asarray(a), requires_grad=True) for a in (x, w, b))
        if fused:
            y = tf.conv_maxpool(xt, wt, pad, window, bias_relu=bt)
        else:
            y = tf.maxpool(tf.relu(tf.conv(xt, wt, bt, 1, pad)), window)
        y.backward(xp.asarray(np.arange(y.size, dtype=np.float64).reshape(y.shape) % 7 - 3))
        results.append([to_numpy(a) for a in (y.data, xt.grad, wt.grad, bt.grad)])
    for name, got, expected in zip(("y", "gx", "gw", "gb"), *results):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("sizes,kernel,pad,window", CONV_POOL_CASES[:6])
@pytest.mark.parametrize("with_bias", [False, True])
def test_both_routes_of_the_conv_pool_contract_agree(xp, rng, sizes, kernel, pad, window, with_bias):
    """ops.conv_pool with columns by window offset (NumpyOps) and as a convolution then a pooling (the route
    CudaOps takes, with its kernels): the same outputs and gradients, from the same ops object."""
    ops = tf.backends.ops_for(xp.zeros(1))
    x, w = xp.asarray(rng.standard_normal((2, 3) + sizes)), xp.asarray(rng.standard_normal((4, 3) + kernel))
    b = xp.asarray(np.array([0.5, -1.0, 0.0, -30.0])) if with_bias else None
    needs = (True, True, True) if with_bias else (True, True)
    results = []
    for forward, backward in ((tf.backends.NumpyOps.conv_pool, tf.backends.NumpyOps.conv_pool_backward),
                              (ops.conv_then_pool, ops.conv_then_pool_backward)):
        forward = forward.__get__(ops)
        backward = backward.__get__(ops)
        y, saved = forward(x, w, b, pad, window)
        gy = xp.asarray(np.arange(y.size, dtype=np.float64).reshape(y.shape) % 7 - 3)
        grads = backward(gy, w, saved, needs)
        assert len(grads) == len(needs)
        results.append([to_numpy(a) for a in (y, *grads)])
    for name, got, expected in zip(("y", "gx", "gw", "gb"), *results):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_conv_maxpool_refuses_a_bias_that_does_not_fit_the_weights(rng):
    x = tf.Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    w = tf.Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    with pytest.raises(ValueError, match=r"expected a bias of shape \(4,\), one number per output channel, "
                                         r"got shape \(3,\)"):
        tf.conv_maxpool(x, w, 1, 2, bias_relu=np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="expected a numpy float32 bias like the weights, got a numpy float64 one"):
        tf.conv_maxpool(x, w, 1, 2, bias_relu=np.zeros(4))


@pytest.mark.parametrize("sizes,kernel,pad,window", CONV_POOL_CASES[:6])
def test_conv_maxpool_gradcheck(rng, sizes, kernel, pad, window):
    x = rng.standard_normal((2, 2) + sizes)
    w = rng.standard_normal((3, 2) + kernel)
    assert tf.gradcheck(lambda x, w: tf.conv_maxpool(x, w, pad, window), x, w)


@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 3), size=st.integers(1, 8), kernel=st.integers(1, 3), pad=st.integers(0, 2),
       window=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_conv_maxpool_random_shapes_match_nested_loops(d, size, kernel, pad, window, seed):
    if size + 2 * pad - kernel + 1 < window:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (2, 2) + (size,) * d).astype(np.float64)  # small integers: ties in most windows
    w = rng.integers(-1, 2, (2, 2) + (kernel,) * d).astype(np.float64)
    xt = tf.Tensor(x, requires_grad=True)
    y = tf.conv_maxpool(xt, tf.Tensor(w), (pad,) * d, (window,) * d)
    conv_out = conv_reference(x, w, None, (1,) * d, (pad,) * d)
    expected, argmax = maxpool_reference(conv_out, (window,) * d, (window,) * d)
    np.testing.assert_allclose(y.data, expected, atol=1e-12)
    y.sum().backward()
    # the gradient of sum(y) to x: each window's winner passes 1 back through the convolution, which is
    # linear in x, so tinyflux's own conv backward (checked against finite differences above) gives it
    winners = np.zeros_like(conv_out)
    for in_index in argmax.values():
        winners[in_index] += 1
    x_any = tf.Tensor(np.zeros_like(x), requires_grad=True)
    tf.conv(x_any, tf.Tensor(w), None, 1, pad).backward(winners)
    np.testing.assert_allclose(xt.grad, x_any.grad, atol=1e-12)


def test_col2im_pooled_is_the_adjoint_of_im2col_pooled(rng):
    from tinyflux.backends.numpy_ops import col2im_pooled, im2col_pooled, pool_geometry
    for sizes, kernel, pad, window in CONV_POOL_CASES:
        x = rng.standard_normal((2, 3) + sizes)
        geometry = pool_geometry(x.shape, kernel, pad, window)
        col = im2col_pooled(x, geometry)
        g = rng.standard_normal(col.shape)
        assert np.vdot(col, g) == pytest.approx(np.vdot(x, col2im_pooled(g, geometry)), rel=1e-10)


def test_conv_maxpool_refuses_an_output_smaller_than_the_window():
    with pytest.raises(ValueError, match=r"convolution output smaller than the pooling window \(3, 3\)"):
        tf.conv_maxpool(tf.Tensor(np.zeros((1, 1, 4, 4))), tf.Tensor(np.zeros((2, 1, 3, 3))), 0, (3, 3))


def test_page_aligned_buffers_start_on_a_page():
    from tinyflux.backends.buffers import PAGE, page_aligned
    for shape, dtype in [((3, 5), np.float32), ((7,), np.float64), ((2, 1000), np.float32)]:
        zeros = page_aligned(np, shape, dtype, zeros=True)
        assert zeros.ctypes.data % PAGE == 0 and zeros.shape == shape and zeros.dtype == dtype
        assert not zeros.any()
        assert page_aligned(np, shape, dtype).ctypes.data % PAGE == 0


def test_big_buffers_are_reused_once_nothing_uses_them_and_released_when_shapes_change():
    from tinyflux.backends.buffers import RECYCLE_BYTES, BufferPool
    pool = BufferPool()
    first = pool.take(RECYCLE_BYTES)
    first_address = first.ctypes.data
    view = first[100:200]  # an array that uses the buffer, as the columns of a step do
    del first
    second = pool.take(RECYCLE_BYTES)
    assert second.ctypes.data != first_address  # still in use: never handed out twice
    del view
    again = pool.take(RECYCLE_BYTES)
    assert again.ctypes.data == first_address and len(pool.buffers) == 2  # free again: reused, nothing new
    del again, second
    other = pool.take(2 * RECYCLE_BYTES)  # another size: the two free buffers go back, one new one comes
    assert len(pool.buffers) == 1 and pool.buffers[0] is other


def test_page_aligned_arrays_from_the_pool_hold_what_is_written_and_zeros_when_asked():
    from tinyflux.backends.buffers import RECYCLE_BYTES, page_aligned
    shape = (RECYCLE_BYTES // 4,)
    a = page_aligned(np, shape, np.float32)
    a[:] = 7
    b = page_aligned(np, shape, np.float32, zeros=True)  # a is alive: b is another buffer
    assert not np.shares_memory(a, b) and b.max() == 0 and a.min() == 7
    address = a.ctypes.data
    del a
    c = page_aligned(np, shape, np.float32, zeros=True)  # a's buffer again, zeroed
    assert c.ctypes.data == address and c.max() == 0
