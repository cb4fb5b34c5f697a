"""Checkpoints: bit-exact round trips, atomic saves, and every CheckpointError."""
import os

import h5py
import numpy as np
import pytest

import tinyflux as tf
from test_nn import mnist_model
from tinyflux import nn, optim


def trained_model_and_optimizer(seed=0, steps=2):
    tf.seed(seed)
    model = mnist_model()
    opt = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = tf.Tensor(rng.uniform(0, 1, (4, 1, 28, 28)).astype(np.float32))
        tf.logit_cross_entropy(model(x), rng.integers(0, 10, 4)).backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_round_trip_is_bit_exact_with_optimizer_and_metadata(tmp_path):
    model, opt = trained_model_and_optimizer()
    path = tmp_path / "model.h5"
    tf.save(path, model, opt, epoch=3, accuracy=0.9912, lr=3e-3, note="best", drops=[5, 10])
    other, other_opt = trained_model_and_optimizer(seed=1, steps=1)
    meta = tf.load(path, other, other_opt)
    assert meta == {"epoch": 3, "accuracy": 0.9912, "lr": 3e-3, "note": "best", "drops": [5, 10]}
    for p, q in zip(model.parameters(), other.parameters()):
        assert p.data.dtype == q.data.dtype and np.array_equal(p.data, q.data)
    for a, b in zip(opt.m + opt.v, other_opt.m + other_opt.v):
        assert np.array_equal(a, b)
    assert other_opt.t == opt.t == 2 and other_opt.lr == opt.lr
    with h5py.File(path) as f:
        assert "Dense(288 => 10)" in f.attrs["model"] and f.attrs["tinyflux_version"] == tf.__version__
        assert sorted(f["parameters"]) == sorted(name for name, _ in model.named_parameters())


def test_resumed_training_continues_identically(tmp_path):
    model, opt = trained_model_and_optimizer(steps=2)
    tf.save(tmp_path / "c.h5", model, opt)
    resumed, resumed_opt = trained_model_and_optimizer(seed=5, steps=0)
    tf.load(tmp_path / "c.h5", resumed, resumed_opt)
    x = tf.Tensor(np.ones((2, 1, 28, 28), dtype=np.float32))
    for m, o in ((model, opt), (resumed, resumed_opt)):
        tf.logit_cross_entropy(m(x), np.array([1, 2])).backward()
        o.step()
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert np.array_equal(p.data, q.data)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, _ = trained_model_and_optimizer()
    path = tmp_path / "model.h5"
    tf.save(path, model, epoch=1)
    before = path.read_bytes()
    calls = {"n": 0}
    original = h5py.Group.create_dataset

    def failing_create_dataset(self, name, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # crash halfway through the parameters
            raise OSError("disk full (simulated)")
        return original(self, name, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create_dataset)
    with pytest.raises(OSError, match="simulated"):
        tf.save(path, model, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert tf.load(path, mnist_model()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["model.h5"]  # no temporary file left behind


def test_metadata_must_be_plain_values(tmp_path):
    with pytest.raises(TypeError, match="metadata trainer=.* only numbers, strings"):
        tf.save(tmp_path / "m.h5", mnist_model(), trainer=object())
    assert not (tmp_path / "m.h5").exists()


def test_mismatches_are_all_listed_and_nothing_is_changed(tmp_path):
    small = nn.Chain(nn.Conv((3, 3), 1, 16, pad=1), nn.MaxPool((2, 2)), nn.Dense(4, 2), nn.Dense(2, 2))
    path = tmp_path / "small.h5"
    tf.save(path, small)
    model = mnist_model()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(tf.CheckpointError) as info:
        tf.load(path, model)
    message = str(info.value)
    assert str(path) in message
    assert "mismatched parameters/2.weight: file has float32(2, 4), expected float32(32, 16, 3, 3)" in message
    assert "missing parameters/7.weight" in message and "missing parameters/4.bias" in message
    assert "unexpected parameters/3.weight" in message and "unexpected parameters/3.bias" in message
    for p, q in zip(before, model.parameters()):
        assert np.array_equal(p, q.data)


def test_unexpected_and_dtype_mismatch(tmp_path):
    model = mnist_model()
    path = tmp_path / "m.h5"
    tf.save(path, model)
    with h5py.File(path, "a") as f:
        f["parameters/extra"] = np.zeros(3)
        del f["parameters/0.bias"]
        f["parameters/0.bias"] = np.zeros(16, dtype=np.float64)
    with pytest.raises(tf.CheckpointError) as info:
        tf.load(path, mnist_model())
    assert "unexpected parameters/extra" in str(info.value)
    assert "mismatched parameters/0.bias: file has float64(16,), expected float32(16,)" in str(info.value)


def test_optimizer_missing_or_of_another_type(tmp_path):
    model, opt = trained_model_and_optimizer()
    tf.save(tmp_path / "no_opt.h5", model)
    with pytest.raises(tf.CheckpointError, match="missing optimizer"):
        tf.load(tmp_path / "no_opt.h5", model, opt)
    tf.save(tmp_path / "sgd.h5", model, optim.SGD(model.parameters(), momentum=0.9))
    with pytest.raises(tf.CheckpointError, match="mismatched optimizer: file has SGD, expected Adam"):
        tf.load(tmp_path / "sgd.h5", model, opt)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all", "truncated"])
def test_unreadable_files_raise_checkpoint_error_with_the_path(tmp_path, content):
    path = tmp_path / "bad.h5"
    if content == "truncated":
        tf.save(path, mnist_model())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(tf.CheckpointError, match=str(path)):
        tf.load(path, mnist_model())


def test_missing_file_and_foreign_hdf5(tmp_path):
    with pytest.raises(tf.CheckpointError, match="no such checkpoint file"):
        tf.load(tmp_path / "absent.h5", mnist_model())
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(2)
    with pytest.raises(tf.CheckpointError, match="not a tinyflux checkpoint"):
        tf.load(tmp_path / "other.h5", mnist_model())
