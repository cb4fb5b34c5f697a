"""The Numba kernels (tinyflux/backends/numba_ops.py, numba_blocks.py) against the NumPy path, the reference."""
import numpy as np
import pytest

import tinyflux as tf
from tinyflux import backends
from tinyflux.functional.convolution import ConvMaxPoolFunction

numba = pytest.importorskip("numba", reason="Numba is not installed (pip install 'tinyflux[fast]')")
from tinyflux.backends import numba_blocks, numba_conv  # noqa: E402 (only where Numba is)
from tinyflux.backends.numba_ops import DirectSaved, NumbaOps  # noqa: E402

DIRECT_CASES = [
    # (input spatial sizes, kernel, pad, window): windows of 8 or more positions, which take the kernels
    ((16, 32, 32), (3, 3, 3), (1, 1, 1), (2, 2, 2)),  # the video model's first layer
    ((6, 7, 5), (3, 3, 3), (1, 1, 1), (2, 2, 2)),  # the last frame, row and column in no window
    ((5, 6, 6), (2, 3, 1), (0, 2, 1), (2, 2, 3)),  # unequal kernel, padding and window
    ((9, 10), (3, 3), (1, 1), (3, 3)),  # 2-D, lifted to a clip of one frame
    ((20,), (5,), (2,), (8,)),  # 1-D
    ((3, 5), (2, 2), (3, 0), (4, 2)),  # more padding than input on one side
]


def run_op(x, w, pad, window, kernels: bool, grad_x=True, b=None):
    """((y, gx, gw, gb), the op's Function) of conv_maxpool, with a bias and ReLU where b is given, with
    Numba's kernels on or off."""
    previous = tf.modes.cpu_kernels
    tf.modes.cpu_kernels = kernels
    try:
        xt, wt = tf.Tensor(x, requires_grad=grad_x), tf.Tensor(w, requires_grad=True)
        bt = None if b is None else tf.Tensor(b, requires_grad=True)
        y = tf.conv_maxpool(xt, wt, pad, window, bias_relu=bt)
        y.backward(np.cos(np.arange(y.size)).reshape(y.shape).astype(x.dtype))  # every output its own gradient
        return (y.data, xt.grad, wt.grad, None if bt is None else bt.grad), y.creator
    finally:
        tf.modes.cpu_kernels = previous


def ran_kernels(function) -> bool:
    """Whether NumbaOps's kernels computed this ConvMaxPoolFunction (directly or in blocks)."""
    return isinstance(function.saved, (DirectSaved, numba_blocks.BlockSaved))


def run_conv_pool(x, w, pad, window, kernels: bool, grad_x=True):
    """(y, gx, gw, whether the kernels ran) of conv_maxpool with Numba's kernels on or off."""
    (y, gx, gw, _), function = run_op(x, w, pad, window, kernels, grad_x)
    return y, gx, gw, ran_kernels(function)


BLOCK_CASES = [
    # (input spatial sizes, kernel, pad, window): windows of fewer than 8 positions, which take numba_blocks
    ((28, 28), (3, 3), (1, 1), (2, 2)),  # MNIST's first layer
    ((7, 7), (3, 3), (1, 1), (2, 2)),  # MNIST's third: the last row and column in no window
    ((9, 11), (2, 3), (0, 2), (2, 3)),  # unequal kernel, padding and window
    ((17,), (5,), (2,), (3,)),  # 1-D
    ((4, 6, 5), (3, 3, 3), (1, 1, 1), (1, 2, 2)),  # 3-D with a 1x2x2 window
]


@pytest.mark.parametrize("sizes,kernel,pad,window", DIRECT_CASES + BLOCK_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_the_numpy_path(rng, sizes, kernel, pad, window, dtype):
    """The blocks, backward by the direct kernels (windows of 8 and more) or their own GEMMs (smaller
    windows), against NumPy."""
    x = rng.standard_normal((3, 2) + sizes).astype(dtype)
    w = rng.standard_normal((5, 2) + kernel).astype(dtype)
    *fast, ran_direct = run_conv_pool(x, w, pad, window, kernels=True)
    *reference, ran_columns = run_conv_pool(x, w, pad, window, kernels=False)
    assert ran_direct and not ran_columns
    tolerance = 2e-5 if dtype == np.float32 else 1e-12
    for name, got, expected in zip(("y", "gx", "gw"), fast, reference):
        assert got.dtype == dtype and got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max(),
                                   err_msg=name)
    assert fast[1].strides == reference[1].strides  # gx in the input's memory order on every path


@pytest.mark.parametrize("sizes,kernel,pad,window", DIRECT_CASES[1:])
def test_kernels_gradcheck(rng, sizes, kernel, pad, window):
    x = rng.standard_normal((2, 2) + sizes)
    w = rng.standard_normal((3, 2) + kernel)
    assert tf.gradcheck(lambda x, w: tf.conv_maxpool(x, w, pad, window), x, w)
    assert ran_kernels(tf.conv_maxpool(tf.Tensor(x), tf.Tensor(w, requires_grad=True), pad, window).creator)


def test_ties_send_the_gradient_to_the_first_offset_as_the_numpy_path_does(rng):
    x = rng.integers(-1, 2, (2, 3, 6, 6, 6)).astype(np.float64)  # small integers: most windows tie
    w = rng.integers(-1, 2, (4, 3, 3, 3, 3)).astype(np.float64)
    for got, expected in zip(run_conv_pool(x, w, (1,) * 3, (2,) * 3, True)[:3],
                             run_conv_pool(x, w, (1,) * 3, (2,) * 3, False)[:3]):
        # a gradient sent to another offset of a tied window would be off by O(1), not by rounding
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_the_first_layer_computes_no_input_gradient_and_odd_layouts_work(rng):
    x = rng.standard_normal((4, 3, 8, 8, 2)).astype(np.float32).transpose(0, 4, 1, 2, 3)  # (4, 2, 3, 8, 8) view
    w = rng.standard_normal((6, 2, 3, 3, 3)).astype(np.float32)
    y, gx, gw, _ = run_conv_pool(x, w, (1,) * 3, (2,) * 3, True, grad_x=False)
    y_ref, _, gw_ref, _ = run_conv_pool(np.ascontiguousarray(x), w, (1,) * 3, (2,) * 3, False, grad_x=False)
    assert gx is None
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(gw, gw_ref, rtol=2e-5, atol=2e-5 * np.abs(gw_ref).max())


def test_results_do_not_depend_on_the_number_of_threads(rng):
    x = rng.standard_normal((3, 3, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run_conv_pool(x, w, (1,) * 3, (2,) * 3, True)[:3]
        numba.set_num_threads(threads)
        many = run_conv_pool(x, w, (1,) * 3, (2,) * 3, True)[:3]
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, many):
        assert a.tobytes() == b.tobytes()


def test_a_video_model_trains_the_same_with_and_without_the_kernels(rng):
    clips = rng.uniform(0, 1, (4, 3, 16, 32, 32)).astype(np.float32)  # the model's clip size
    labels = np.array([0, 1, 2, 3])
    runs = []
    for kernels in (True, False):
        tf.modes.cpu_kernels = kernels
        try:
            tf.seed(0)
            model = tf.models.video_convnet(3, 4)
            step = tf.train.Step(model, tf.logit_cross_entropy, tf.optim.Adam(model.parameters(), lr=1e-3))
            losses = [float(step(clips, labels)) for _ in range(5)]
            runs.append((losses, [p.data.copy() for p in model.parameters()]))
        finally:
            tf.modes.cpu_kernels = True
    (losses, params), (losses_ref, params_ref) = runs
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5)
    for p, p_ref in zip(params, params_ref):
        np.testing.assert_allclose(p, p_ref, rtol=1e-4, atol=1e-6)


def test_the_switch_and_a_missing_numba_give_the_numpy_ops(monkeypatch):
    monkeypatch.setattr(tf.modes, "cpu_kernels", True)
    assert isinstance(backends.ops_for(np.zeros(3)), NumbaOps)
    monkeypatch.setattr(tf.modes, "cpu_kernels", False)
    assert backends.ops_for(np.zeros(3)) is backends.NUMPY_OPS
    monkeypatch.setattr(tf.modes, "cpu_kernels", True)
    monkeypatch.setattr(backends, "_numba_ops", None)  # not yet tried
    monkeypatch.setitem(__import__("sys").modules, "tinyflux.backends.numba_ops", None)  # an import that fails
    assert backends.ops_for(np.zeros(3)) is backends.NUMPY_OPS
    _, saved = backends.NUMPY_OPS.conv_pool(np.ones((1, 1, 4, 6, 6)), np.ones((2, 1, 3, 3, 3)), None, (1,) * 3, (2,) * 3)
    assert isinstance(saved, backends.numpy_ops.PooledColumnsSaved)


@pytest.mark.parametrize("sizes,kernel,pad,window", BLOCK_CASES[1:] + DIRECT_CASES[1:3])
def test_bias_and_relu_inside_the_op_match_the_numpy_path(rng, sizes, kernel, pad, window):
    """Both Numba paths (blocks, and the direct kernels for big windows) against the NumPy path, which runs
    the same ops as BiasReLU after the pooling."""
    x = rng.standard_normal((4, 2) + sizes)
    w = rng.standard_normal((3, 2) + kernel)
    b = np.array([0.5, -1.0, -30.0])  # some outputs below zero after the bias, some above
    fast, function = run_op(x, w, pad, window, True, b=b)
    reference, _ = run_op(x, w, pad, window, False, b=b)
    assert ran_kernels(function) and (fast[0] == 0).any() and (fast[0] > 0).any()
    for name, got, expected in zip(("y", "gx", "gw", "gb"), fast, reference):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("sizes,kernel,pad,window", BLOCK_CASES[1:])
def test_blocks_gradcheck(rng, sizes, kernel, pad, window):
    x = rng.standard_normal((2, 2) + sizes)
    w = rng.standard_normal((3, 2) + kernel)
    b = rng.standard_normal(3)
    assert tf.gradcheck(lambda x, w, b: tf.conv_maxpool(x, w, pad, window, bias_relu=b), x, w, b)
    y = tf.conv_maxpool(tf.Tensor(x), tf.Tensor(w, requires_grad=True), pad, window, bias_relu=tf.Tensor(b))
    assert isinstance(y.creator.saved, numba_blocks.BlockSaved)


def test_many_blocks_on_one_and_on_two_threads_give_the_numbers_of_one_block(rng, monkeypatch):
    """Blocks of a few positions, an uneven last one, several per thread: the same sums up to rounding."""
    x = rng.standard_normal((16, 3, 10, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    whole = run_conv_pool(x, w, (1, 1), (2, 2), kernels=True)
    monkeypatch.setattr(numba_blocks, "BLOCK_BYTES", 27 * 4 * 4 * 7)  # 7 positions of columns (fewest 64)
    assert len(numba_blocks._blocks(5 * 16 * 5, 27 * 4, 4)) > 4  # (E of this layer: U1 * N * L2)
    threads = numba.get_num_threads()
    for lanes in (1, 2):
        numba.set_num_threads(min(lanes, numba.config.NUMBA_NUM_THREADS))
        try:
            blocked = run_conv_pool(x, w, (1, 1), (2, 2), kernels=True)
        finally:
            numba.set_num_threads(threads)
        for got, expected in zip(blocked[:3], whole[:3]):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("block_bytes", [None, 27 * 4 * 4 * 7], ids=["default-blocks", "many-small-blocks"])
def test_block_gradients_are_the_same_bits_on_one_two_and_three_threads(rng, monkeypatch, block_bytes):
    """The weight and input gradients add every block's share: in one fixed order, whatever the lanes."""
    if block_bytes:
        monkeypatch.setattr(numba_blocks, "BLOCK_BYTES", block_bytes)
    x = rng.standard_normal((16, 3, 28, 28)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    results = []
    for lanes in (1, 2, 3):
        pooled, saved = numba_blocks.conv_pool_blocks(x, w, (1, 1), (2, 2), lanes, bias)
        gy = np.cos(np.arange(pooled.size)).reshape(pooled.shape).astype(np.float32)
        results.append([np.ascontiguousarray(pooled), *numba_blocks.conv_pool_blocks_backward(
            gy, w, saved, (True, True, True), lanes)])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()
    (y, gx, gw, gb), _ = run_op(x, w, (1, 1), (2, 2), kernels=False, b=bias)  # the NumPy path: the oracle
    for got, expected in zip(results[0], (y, gx, gw, gb)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_chain_with_relu_gives_the_same_model_with_kernels_on_and_off(rng):
    """nn.Chain puts a Conv's bias and ReLU inside the convolution-pooling op; the bias gets its gradient."""
    x = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
    results = []
    for kernels in (True, False):
        previous = tf.modes.cpu_kernels
        tf.modes.cpu_kernels = kernels
        try:
            tf.seed(3)
            model = tf.nn.Chain(tf.nn.Conv((3, 3), 1, 4, tf.relu, pad=1), tf.nn.MaxPool((2, 2)), tf.nn.flatten)
            model[0].bias.data[:] = [0.2, -0.2, 0.1, -0.1]
            y = model(x)
            y.sum().backward()
            results.append((y.data, model[0].weight.grad, model[0].bias.grad))
        finally:
            tf.modes.cpu_kernels = previous
    assert np.abs(results[0][2]).max() > 0
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("sizes,kernel,pad,window", [DIRECT_CASES[0], BLOCK_CASES[0]])
def test_a_nan_in_the_input_reaches_the_output_as_on_the_numpy_path(rng, sizes, kernel, pad, window):
    """A diverged model must show NaN, not have it hidden by the pooling's compare or the ReLU."""
    x = rng.standard_normal((2, 2) + sizes).astype(np.float32)
    x[1, 0][(0,) * len(sizes)] = np.nan
    w = rng.standard_normal((3, 2) + kernel).astype(np.float32)
    b = np.array([0.5, -1.0, -30.0], np.float32)
    for kernels in (True, False):
        (y, *_), _ = run_op(x, w, pad, window, kernels, b=b)
        assert np.isnan(y[1]).any() and not np.isnan(y[0]).any(), kernels
    (fast, *_), _ = run_op(x, w, pad, window, True, b=b)
    (reference, *_), _ = run_op(x, w, pad, window, False, b=b)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(reference))


def test_which_windows_take_which_path():
    """2x2x2 and larger: columns in blocks, backward by the direct kernels (DirectSaved); smaller: columns
    in blocks both ways; float16: the NumPy path; and a plain stride-1 convolution: the block
    convolution that stores its outputs compactly (conv_blocks)."""
    ops = NumbaOps()
    routes = {}
    for dtype, window in ((np.float32, (2, 2, 2)), (np.float64, (2, 2, 2)), (np.float32, (1, 2, 2)),
                          (np.float16, (2, 2, 2))):
        x, w = np.ones((1, 1, 4, 6, 6), dtype), np.ones((2, 1, 3, 3, 3), dtype)
        routes[np.dtype(dtype).name, window] = type(ops.conv_pool(x, w, None, (1,) * 3, window)[1]).__name__
    assert routes == {("float32", (2, 2, 2)): "DirectSaved", ("float64", (2, 2, 2)): "DirectSaved",
                      ("float32", (1, 2, 2)): "BlockSaved", ("float16", (2, 2, 2)): "PooledColumnsSaved"}
    x, w = np.ones((1, 1, 6, 6), np.float32), np.ones((2, 1, 3, 3), np.float32)
    assert isinstance(ops.conv(x, w, None, (1, 1), (1, 1))[1], numba_conv.ConvBlockSaved)
    assert type(ops.conv(x, w, None, (2, 2), (1, 1))[1]).__name__ == "ConvSaved"  # stride 2: NumpyOps's columns


def test_one_clip_and_a_direct_function_object(rng):
    x = rng.standard_normal((1, 1, 4, 6, 6))
    w = rng.standard_normal((2, 1, 3, 3, 3))
    function = ConvMaxPoolFunction((1, 1, 1), (2, 2, 2))
    y = function.forward(x, w)
    assert ran_kernels(function) and y.shape == (1, 2, 2, 3, 3)


def test_each_process_of_a_distributed_run_gets_its_share_of_threads(monkeypatch):
    import os
    from types import SimpleNamespace
    threads = numba.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 8)
    set_to = []
    monkeypatch.setattr(numba, "set_num_threads", set_to.append)
    tf.distributed.limit_blas_threads(SimpleNamespace(local_size=4))  # 4 ranks on an 8-core machine
    assert set_to == [2]
    assert numba.get_num_threads() == threads  # (set_num_threads was replaced: nothing changed for real)


def test_windows_of_more_than_256_positions_keep_their_winners(rng):
    """7x9x6 = 378 window offsets: more than a byte holds."""
    x = rng.standard_normal((1, 1, 8, 9, 7))
    w = rng.standard_normal((2, 1, 2, 3, 2))
    for got, expected in zip(run_conv_pool(x, w, (0, 1, 0), (7, 9, 6), True)[:3],
                             run_conv_pool(x, w, (0, 1, 0), (7, 9, 6), False)[:3]):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


def test_after_a_kernel_products_run_on_one_blas_thread(monkeypatch):
    """OpenBLAS's threads spin after each product and would take the kernels' cores."""
    seen = []
    original = backends.NumpyOps.matmul

    def watched(self, a, b):
        seen.append(blas_threads())
        return original(self, a, b)

    monkeypatch.setattr(backends.NumpyOps, "matmul", watched)
    ops, a = NumbaOps(), np.ones((4, 4), np.float32)
    before = blas_threads()
    ops.matmul(a, a)
    ops.conv_pool(np.ones((1, 1, 4, 4, 4), np.float32), np.ones((2, 1, 3, 3, 3), np.float32), None, (1,) * 3, (2,) * 3)
    np.testing.assert_array_equal(ops.matmul(a, a), a @ a)
    assert seen == [before, [1] * len(before)] and blas_threads() == before  # and put back afterwards


def test_without_threadpoolctl_products_still_run_and_say_why_they_may_be_slow(monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "threadpoolctl", None)  # an import that fails
    ops, a = NumbaOps(), np.ones((4, 4), np.float32)
    ops.conv_pool(np.ones((1, 1, 4, 4, 4), np.float32), np.ones((2, 1, 3, 3, 3), np.float32), None, (1,) * 3, (2,) * 3)
    with caplog.at_level("WARNING", logger="tinyflux"):
        np.testing.assert_array_equal(ops.matmul(a, a), a @ a)
        np.testing.assert_array_equal(ops.matmul(a, a), a @ a)
    assert sum("threadpoolctl is not installed" in r.message for r in caplog.records) == 1


def test_float16_keeps_the_numpy_path(rng):
    """The kernels are compiled for float32 and float64; another dtype must not reach them (Numba would
    fail with a bare NotImplementedError)."""
    x = rng.standard_normal((2, 1, 4, 6, 6)).astype(np.float16)
    w = rng.standard_normal((3, 1, 3, 3, 3)).astype(np.float16)
    y, gx, gw, ran_direct = run_conv_pool(x, w, (1,) * 3, (2,) * 3, True)
    y_ref, gx_ref, gw_ref, _ = run_conv_pool(x, w, (1,) * 3, (2,) * 3, False)
    assert not ran_direct and y.dtype == np.float16
    for got, expected in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
        np.testing.assert_array_equal(got, expected)


# -- batch normalisation, ReLU and max-pooling in one pass (numba_norm) ------------------------------

def norm_pool(ops, x, gamma, beta, window, relu, training):
    """(pooled, gx, g_gamma, g_beta, mean, var) of ops.batch_norm_pool and its backward pass."""
    mean, var = ops.channel_moments(x) if training else (np.full(x.shape[1], 0.25, x.dtype),
                                                         np.full(x.shape[1], 2.0, x.dtype))
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(x.dtype)
    y, saved = ops.batch_norm_pool(x, mean, inv_std, gamma, beta, window, relu)
    gy = np.cos(np.arange(y.size)).reshape(y.shape).astype(x.dtype)
    return (y,) + ops.batch_norm_pool_backward(gy, saved, training, (True, True, True)) + (mean, var)


def layouts(x):
    """x (N, C, T, H, W) as it is, laid out (C, T, N, H, W) as the block convolution leaves it, and with
    W before H in memory (rows that are not planes: the kernels copy it first)."""
    ctn = np.empty((x.shape[1], x.shape[2], x.shape[0]) + x.shape[3:], x.dtype).transpose(2, 0, 1, 3, 4)
    ctn[...] = x
    swapped = np.empty(x.shape[:3] + (x.shape[4], x.shape[3]), x.dtype).transpose(0, 1, 2, 4, 3)
    swapped[...] = x
    return {"contiguous": x, "(C, T, N, H, W)": ctn, "W before H": swapped}


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "none"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("shape, window", [((3, 4, 5, 9, 7), (2, 2, 2)), ((3, 4, 6, 6, 10), (1, 2, 3)),
                                           ((2, 3, 1, 7, 8), (1, 3, 2))], ids=["2x2x2", "1x2x3", "2-D"])
def test_norm_pool_kernels_match_numpy_in_every_layout(rng, shape, window, training, relu):
    """Outputs, gradients and moments equal the NumPy path's; integer inputs make ties in most windows, and the
    gradient must reach the same winner (in evaluation gx is nonzero at the winners alone)."""
    x = rng.integers(-3, 4, shape).astype(np.float32)
    gamma = np.array([1.5, -0.7, 2.0, -1.0][:shape[1]], np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    reference = norm_pool(backends.numpy_ops.NumpyOps(), x, gamma, beta, window, relu, training)
    for name, laid_out in layouts(x).items():
        kernels = norm_pool(NumbaOps(), laid_out, gamma, beta, window, relu, training)
        for what, got, expected in zip(("pooled", "gx", "g_gamma", "g_beta", "mean", "var"), kernels, reference):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"{what}, {name}")
        if not training:
            np.testing.assert_array_equal(kernels[1] != 0, reference[1] != 0, err_msg=name)


def test_norm_pool_kernels_keep_nan_and_give_the_same_bits_on_any_number_of_threads(rng):
    x = rng.standard_normal((4, 3, 6, 8, 8)).astype(np.float32)
    x[1, 2, 3, 4, 5] = np.nan
    gamma, beta = np.array([1.0, -2.0, 0.5], np.float32), np.zeros(3, np.float32)
    runs = []
    for threads in (1, 2):
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            runs.append(norm_pool(NumbaOps(), x[:, :2], gamma[:2], beta[:2], (2, 2, 2), True, True))
        finally:
            numba.set_num_threads(previous)
    for one, other in zip(*runs):
        np.testing.assert_array_equal(one, other)
    y = norm_pool(NumbaOps(), x, gamma, beta, (2, 2, 2), True, False)[0]
    assert np.isnan(y[1, 2, 1, 2, 2]) and np.isnan(y).sum() == 1  # the window holding the NaN, and it alone


def test_norm_pool_takes_numpy_for_dtypes_without_kernels(rng):
    from tinyflux.backends.numpy_ops import BatchNormPoolSaved
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float16)
    ones, zeros = np.ones(2, np.float16), np.zeros(2, np.float16)
    _, saved = NumbaOps().batch_norm_pool(x, zeros, ones, ones, zeros, (2, 2), True)
    assert isinstance(saved, BatchNormPoolSaved)
