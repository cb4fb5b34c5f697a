"""BatchNorm, Dropout, AvgPool and GlobalMeanPool in 1-D, 2-D and 3-D, training and evaluation modes, their buffers in
checkpoints, and AdamW: forward against NumPy or nested-loop references, backward against finite differences, on
every backend the ``xp`` fixture gives."""
import itertools

import numpy as np
import pytest

import tinyflux as tf
from conftest import move_to, to_numpy
from tinyflux import distributed, nn, optim

SHAPES = [(4, 3, 7), (3, 2, 5, 6), (2, 2, 4, 3, 5)]  # (N, C, *S) in 1-D, 2-D and 3-D


def batch_norm_reference(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_batch_norm_in_training_normalises_each_channel_and_updates_its_statistics(xp, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    layer = nn.BatchNorm(shape[1])
    layer.weight.data = rng.uniform(0.5, 2, shape[1]).astype(np.float32)
    layer.bias.data = rng.uniform(-1, 1, shape[1]).astype(np.float32)
    layer = move_to(xp, layer)
    y = to_numpy(layer(xp.asarray(x)).data)
    np.testing.assert_allclose(y, batch_norm_reference(x, to_numpy(layer.weight.data), to_numpy(layer.bias.data)),
                               rtol=1e-4, atol=1e-5)
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // shape[1]
    np.testing.assert_allclose(to_numpy(layer.running_mean.data), 0.1 * x.mean(axis=axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(layer.running_var.data), 0.9 + 0.1 * x.var(axis=axes) * m / (m - 1),
                               rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_batch_norm_in_evaluation_uses_the_running_statistics(xp, rng, shape):
    layer = nn.BatchNorm(shape[1]).eval()
    mean, var = rng.standard_normal(shape[1]).astype(np.float32), rng.uniform(0.5, 2, shape[1]).astype(np.float32)
    layer.running_mean.data, layer.running_var.data = mean, var
    x = rng.standard_normal(shape).astype(np.float32)
    layer = move_to(xp, layer)
    y = to_numpy(layer(xp.asarray(x)).data)
    c = (1, -1) + (1,) * (len(shape) - 2)
    np.testing.assert_allclose(y, (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + 1e-5), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(layer.running_mean.data), mean)  # evaluation changes nothing


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_batch_norm_gradients(xp, rng, shape, training):
    x = xp.asarray(rng.standard_normal(shape))
    gamma, beta = xp.asarray(rng.uniform(0.5, 2, shape[1])), xp.asarray(rng.standard_normal(shape[1]))
    running = [xp.asarray(rng.standard_normal(shape[1])), xp.asarray(rng.uniform(0.5, 2, shape[1]))]
    assert tf.gradcheck(lambda x, g, b: tf.functional.batch_norm(x, g, b, *running, training), x, gamma, beta)


def avgpool_reference(x, window):
    out = [s // k for s, k in zip(x.shape[2:], window)]
    y = np.zeros(x.shape[:2] + tuple(out), x.dtype)
    for index in itertools.product(*(range(o) for o in out)):
        block = tuple(slice(i * k, (i + 1) * k) for i, k in zip(index, window))
        y[(slice(None), slice(None)) + index] = x[(slice(None), slice(None)) + block].mean(axis=tuple(
            range(2, x.ndim)))
    return y


@pytest.mark.parametrize("shape, window", [((2, 3, 7), (2,)), ((2, 2, 5, 6), (2, 3)), ((1, 2, 4, 5, 6), (2, 2, 3))],
                         ids=["1d", "2d", "3d"])
def test_avgpool_forward_and_gradients(xp, rng, shape, window):
    x = rng.standard_normal(shape).astype(np.float32)
    y = to_numpy(nn.AvgPool(window)(xp.asarray(x)).data)
    np.testing.assert_allclose(y, avgpool_reference(x, window), rtol=1e-5, atol=1e-6)
    assert tf.gradcheck(lambda x: tf.functional.avgpool(x, window), xp.asarray(x.astype(np.float64)))


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_global_mean_pool_forward_and_gradients(xp, rng, shape):
    x = rng.standard_normal(shape)
    y = to_numpy(nn.GlobalMeanPool()(xp.asarray(x.astype(np.float32))).data)
    np.testing.assert_allclose(y, x.mean(axis=tuple(range(2, x.ndim))), rtol=1e-5, atol=1e-6)
    assert tf.gradcheck(lambda x: nn.GlobalMeanPool()(x), xp.asarray(x))


def test_dropout_drops_a_fraction_scales_the_rest_and_is_off_in_evaluation(xp):
    tf.seed(0)
    layer = nn.Dropout(0.25)
    x = xp.ones((200, 100), dtype=np.float32)
    y = to_numpy(layer(x).data)
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    assert np.array_equal(to_numpy(layer.eval()(x).data), to_numpy(x))
    grad_input = tf.Tensor(xp.ones((4, 5), dtype=np.float64), requires_grad=True)
    out = layer.train()(grad_input)
    out.sum().backward()
    np.testing.assert_array_equal(to_numpy(grad_input.grad), to_numpy(out.data))  # d(x * mask)/dx = mask


def test_dropout_masks_are_seeded_and_continue_from_their_count():
    tf.seed(4)
    first = nn.Dropout(0.5)
    masks = [first(np.ones(8, np.float32)).data for _ in range(3)]
    tf.seed(4)
    again = nn.Dropout(0.5)
    again.draws.data[0] = 2  # as a resumed run, whose checkpoint held the count
    assert np.array_equal(again(np.ones(8, np.float32)).data, masks[2])
    assert not np.array_equal(masks[0], masks[1])


def test_modes_reach_every_layer_and_buffers_are_saved_and_loaded(tmp_path):
    tf.seed(0)
    model = nn.Chain(nn.Conv((3, 3), 1, 4, pad=1), nn.BatchNorm(4, tf.relu), nn.MaxPool((2, 2)), nn.Dropout(0.3),
                     nn.GlobalMeanPool(), nn.Dense(4, 2))
    assert all(layer.training for layer in model.layers if isinstance(layer, nn.Module))
    model.eval()
    assert not any(layer.training for layer in model.layers if isinstance(layer, nn.Module))
    assert [name for name, _ in model.named_buffers()] == ["1.running_mean", "1.running_var", "3.draws"]
    model.train()
    model(np.random.default_rng(0).random((3, 1, 6, 6), dtype=np.float32))  # updates the statistics, draws a mask
    tf.save(tmp_path / "m.h5", model)
    tf.seed(1)
    other = nn.Chain(nn.Conv((3, 3), 1, 4, pad=1), nn.BatchNorm(4, tf.relu), nn.MaxPool((2, 2)), nn.Dropout(0.3),
                     nn.GlobalMeanPool(), nn.Dense(4, 2))
    tf.load(tmp_path / "m.h5", other)
    for (name, a), (_, b) in zip(model.named_buffers(), other.named_buffers()):
        assert np.array_equal(a.data, b.data), name
    assert int(other[3].draws.data[0]) == 1
    tf.save(tmp_path / "plain.h5", nn.Chain(nn.Conv((3, 3), 1, 4, pad=1), nn.flatten))
    with pytest.raises(tf.CheckpointError, match="missing buffers/1.running_mean"):
        tf.load(tmp_path / "plain.h5", nn.Chain(nn.Conv((3, 3), 1, 4, pad=1), nn.BatchNorm(4)))


def test_evaluation_in_tf_train_runs_in_evaluation_mode_and_puts_the_mode_back():
    tf.seed(0)
    model = nn.Chain(nn.flatten, nn.Dense(4, 3), nn.Dropout(0.9))
    images = np.full((50, 2, 2), 200, np.uint8)
    predicted = tf.train.predict(images, model)
    assert model.training and len(set(predicted.tolist())) == 1  # no dropout: the same answer for equal images


class TwoRanks(distributed.Communicator):
    """A stand-in for a 2-rank job whose other rank holds ``other`` (for buffers: one array, summed in)."""

    size = 2

    def __init__(self, others):
        self.others = iter(others)

    def allreduce_sum(self, array):
        array += next(self.others)
        return array


def test_the_ranks_running_statistics_are_averaged():
    layer = nn.BatchNorm(3)
    layer.running_mean.data[...] = [1, 2, 3]
    layer.running_var.data[...] = [2, 2, 2]
    distributed.average_buffers(nn.Chain(layer, nn.Dropout(0.5)), TwoRanks([np.array([3.0, 2, 1]),
                                                                           np.array([4.0, 4, 4])]))
    assert layer.running_mean.data.tolist() == [2, 2, 2] and layer.running_var.data.tolist() == [3, 3, 3]


def test_adamw_decays_every_weight_before_the_adam_step_and_saves_its_decay(tmp_path):
    p = tf.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    q = tf.Tensor(p.data.copy(), requires_grad=True)
    decayed, plain = optim.AdamW([p], lr=0.1, weight_decay=0.5), optim.Adam([q], lr=0.1)
    for _ in range(3):
        p.grad, q.grad = np.array([0.1, 0.2, -0.3]), np.array([0.1, 0.2, -0.3])
        before = q.data.copy()
        decayed.step()
        plain.step()
        adam_move = q.data - before
        q.data[...] = before * (1 - 0.1 * 0.5) + adam_move  # decoupled: shrink, then the same Adam move
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12)
    model = nn.Chain(nn.Dense(2, 2))
    opt = optim.AdamW(model.parameters(), weight_decay=0.3)
    tf.save(tmp_path / "w.h5", model, opt)
    other = optim.AdamW(model.parameters(), weight_decay=0.0)
    tf.load(tmp_path / "w.h5", model, other)
    assert other.weight_decay == 0.3


def test_a_captured_step_refuses_adamw(gpu_path):
    model = nn.Chain(nn.flatten, nn.Dense(4, 2))
    with pytest.raises(tf.CaptureError, match="optim.Adam expected, got AdamW"):
        tf.capture(model, tf.logit_cross_entropy, optim.AdamW(model.parameters()), np.zeros((2, 4), np.float32),
                   np.array([0, 1]))


def test_ranks_start_from_root_buffers_too():
    """A resumed data-parallel run: rank 0 loaded the running statistics, the others must get them."""
    broadcast = []

    class Recording(distributed.Communicator):
        def broadcast(self, array, root=0):
            broadcast.append(array)
            return array

    model = nn.Chain(nn.Conv((3, 3), 1, 2), nn.BatchNorm(2), nn.Dropout(0.1))
    distributed.broadcast_parameters(model, Recording())
    buffers = [b.data for _, b in model.named_buffers()]
    assert len(buffers) == 3 and all(any(a is b for a in broadcast) for b in buffers)


def test_adamw_decays_only_the_parameters_that_have_a_gradient():
    p, q = (tf.Tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = optim.AdamW([p, q], lr=0.1, weight_decay=0.5)
    p.grad = np.zeros(2)  # a zero gradient: Adam moves nothing, so only the decay shows
    opt.step()
    np.testing.assert_allclose(p.data, 0.95)
    assert q.data.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_instance_norm_rescales_each_channel_of_each_example_alone(xp, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.1, 5, shape[:2] + (1,) * (len(shape) - 2))
    x += rng.uniform(-3, 3, shape[:2] + (1,) * (len(shape) - 2))  # a tint and a contrast per example and channel
    axes = tuple(range(2, len(shape)))
    reference = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    layer = nn.InstanceNorm(shape[1])
    for mode in (layer.train(), layer.eval()):  # no statistics kept: both modes compute the same
        np.testing.assert_allclose(to_numpy(mode(xp.asarray(x)).data), reference, rtol=1e-4, atol=1e-5)
    alone = to_numpy(layer(xp.asarray(x[:1])).data)  # an example's output does not depend on the others
    np.testing.assert_allclose(alone, reference[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=["1d", "2d", "3d"])
def test_instance_norm_gradients(xp, rng, shape):
    x = xp.asarray(rng.standard_normal(shape) * 2 + 1)
    assert tf.gradcheck(lambda x: tf.functional.instance_norm(x), x)


def test_instance_norm_refuses_the_wrong_channels_or_a_single_position():
    with pytest.raises(ValueError, match=r"InstanceNorm\(3\): expected input \(N, 3, \*S\), got shape \(2, 4, 5\)"):
        nn.InstanceNorm(3)(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="at least two positions per channel"):
        nn.InstanceNorm(3)(np.zeros((2, 3, 1, 1), np.float32))
    with pytest.raises(ValueError, match="channels"):
        nn.InstanceNorm(0)


def adaptive_reference(x, grid):
    """PyTorch's rule, written out: cell i of an axis of n positions covers floor(i n / k) .. ceil((i + 1) n / k)."""
    out = np.zeros(x.shape[:2] + tuple(grid), x.dtype)
    for index in itertools.product(*(range(k) for k in grid)):
        cell = tuple(slice(i * n // k, -(-(i + 1) * n // k)) for i, n, k in zip(index, x.shape[2:], grid))
        out[(slice(None), slice(None)) + index] = x[(slice(None), slice(None)) + cell].mean(
            axis=tuple(range(2, x.ndim)))
    return out


@pytest.mark.parametrize("shape, grid", [((2, 3, 7), (3,)), ((2, 2, 5, 6), (2, 2)), ((2, 2, 5, 7, 6), (1, 2, 2)),
                                         ((1, 2, 4, 4, 4), (4, 4, 4))], ids=["1d", "2d", "3d", "identity"])
def test_adaptive_mean_pool_against_a_reference_and_finite_differences(xp, rng, shape, grid):
    x = rng.standard_normal(shape)
    layer = nn.AdaptiveMeanPool(grid)
    np.testing.assert_allclose(to_numpy(layer(xp.asarray(x)).data), adaptive_reference(x, grid), rtol=1e-12)
    assert tf.gradcheck(lambda x: tf.functional.adaptive_avgpool(x, grid), xp.asarray(x))


def test_adaptive_mean_pool_refuses_inputs_smaller_than_its_grid():
    with pytest.raises(ValueError, match=r"AdaptiveMeanPool\(\(2, 2\)\): expected input .* got shape \(1, 1, 1, 4\)"):
        nn.AdaptiveMeanPool((2, 2))(np.zeros((1, 1, 1, 4), np.float32))


# -- batch normalisation, ReLU and max-pooling as one op (nn.Chain merges them) ---------------------

POOL_CASES = [((4, 3, 9), (2,)), ((3, 2, 5, 7), (2, 3)), ((2, 3, 5, 6, 7), (2, 2, 2))]  # remainders on every axis


@pytest.mark.parametrize("relu", [True, False], ids=["relu", "none"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("shape, window", POOL_CASES, ids=["1d", "2d", "3d"])
def test_batch_norm_pool_equals_the_three_ops(xp, rng, shape, window, training, relu):
    """F.batch_norm_pool gives the outputs, gradients and running statistics of maxpool(relu(batch_norm(x))),
    with a negative gamma in every other channel (which no pooling-first shortcut could take)."""
    x = rng.standard_normal(shape) * 2 + 0.5
    gamma = rng.uniform(0.5, 2, shape[1]) * np.where(np.arange(shape[1]) % 2, -1, 1)
    beta = rng.standard_normal(shape[1])
    results = []
    for merged in (True, False):
        running = [xp.asarray(np.full(shape[1], 0.3)), xp.asarray(np.full(shape[1], 1.5))]
        xt, gt, bt = (tf.Tensor(xp.asarray(a), requires_grad=True) for a in (x, gamma, beta))
        if merged:
            y = tf.functional.batch_norm_pool(xt, gt, bt, *running, training, 0.1, 1e-5, window, relu)
        else:
            y = tf.functional.batch_norm(xt, gt, bt, *running, training, 0.1, 1e-5)
            y = tf.functional.maxpool(tf.functional.relu(y) if relu else y, window)
        y.backward(xp.asarray(np.cos(np.arange(y.size)).reshape(y.shape)))
        results.append([to_numpy(a) for a in (y.data, xt.grad, gt.grad, bt.grad, *running)])
    for name, merged, separate in zip(("y", "gx", "g_gamma", "g_beta", "running mean", "running var"), *results):
        np.testing.assert_allclose(merged, separate, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batch_norm_pool_gradients(xp, rng, training):
    x = xp.asarray(rng.standard_normal((2, 3, 4, 5, 4)))
    gamma, beta = xp.asarray(rng.uniform(0.5, 2, 3) * [1, -1, 1]), xp.asarray(rng.standard_normal(3))
    running = [xp.asarray(rng.standard_normal(3)), xp.asarray(rng.uniform(0.5, 2, 3))]
    assert tf.gradcheck(lambda x, g, b: tf.functional.batch_norm_pool(x, g, b, *running, training, 0.1, 1e-5,
                                                                      (2, 2, 2), True), x, gamma, beta)


def test_chain_merges_batch_norm_with_the_pooling_after_it(rng):
    from tinyflux.functional.normalization import BatchNormPoolFunction
    assert nn.pooling_plan(nn.BatchNorm(3, tf.relu), nn.MaxPool((2, 2))) == "one op"
    assert nn.pooling_plan(nn.BatchNorm(3), nn.MaxPool((2, 2))) == "one op"
    assert nn.pooling_plan(nn.BatchNorm(3, tf.relu), nn.MaxPool((2, 2), stride=1)) is None  # overlapping windows
    model = nn.Chain(nn.BatchNorm(3, tf.relu), nn.MaxPool((2, 2)))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = model(tf.Tensor(x))
    assert isinstance(y.creator, BatchNormPoolFunction)
    assert y.shape == (2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"MaxPool\(\(2, 2\)\): expected a 4-D input"):  # the pooling's own error
        model(tf.Tensor(rng.standard_normal((2, 3, 4, 6, 6)).astype(np.float32)))


def test_batch_norm_pool_refuses_inputs_smaller_than_its_window(rng):
    gamma, beta = tf.Tensor(np.ones(2)), tf.Tensor(np.zeros(2))
    with pytest.raises(ValueError, match=r"smaller than the window \(2, 2\)"):
        tf.functional.batch_norm_pool(rng.standard_normal((2, 2, 1, 5)), gamma, beta, np.zeros(2), np.ones(2), True,
                                      0.1, 1e-5, (2, 2), True)
