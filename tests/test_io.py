"""Checkpoints: bit-exact round trips, atomic saves, and every CheckpointError."""
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import tinyflux as tf
from tinyflux.models import mnist_convnet as mnist_model
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
    with pytest.raises(tf.CheckpointError, match="model.h5: could not save the checkpoint: OSError: disk full "
                                                 r"\(simulated\); any earlier file under that name is unchanged"):
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


# -- damage is found, and nothing changes before everything is checked ------------------------------------
def _flip_byte_of_dataset(path, name):
    with h5py.File(path, "r") as f:
        offset = f[name].id.get_offset()  # where the dataset's raw bytes start in the file
    with open(path, "r+b") as raw:
        raw.seek(offset + 5)
        byte = raw.read(1)
        raw.seek(offset + 5)
        raw.write(bytes([byte[0] ^ 0x10]))


@pytest.mark.parametrize("name", ["parameters/0.weight", "optimizer/m/2.bias"])
def test_a_flipped_byte_in_a_dataset_is_found(tmp_path, name):
    model, opt = trained_model_and_optimizer()
    path = tmp_path / "m.h5"
    tf.save(path, model, opt)
    _flip_byte_of_dataset(path, name)
    target, target_opt = trained_model_and_optimizer(seed=1, steps=1)
    before = [p.data.copy() for p in target.parameters()]
    with pytest.raises(tf.CheckpointError, match=f"checksum mismatch in {name}"):
        tf.load(path, target, target_opt)
    assert all(np.array_equal(b, p.data) for b, p in zip(before, target.parameters()))


@pytest.mark.parametrize("damage, message", [
    (lambda g: g.attrs.__setitem__("t", "two"), "bad optimizer attribute 't': Adam t: expected an integer"),
    (lambda g: g.attrs.__setitem__("t", 2.5), "bad optimizer attribute 't': Adam t: expected an integer"),
    (lambda g: g.attrs.__delitem__("lr"), "missing optimizer attribute 'lr'"),
    (lambda g: g.attrs.__setitem__("lr", np.nan), "bad optimizer attribute 'lr': Adam lr: must be a finite"),
    (lambda g: g.attrs.__setitem__("beta2", 1.5), "bad optimizer attribute 'beta2'"),
])
def test_damaged_optimizer_attributes_change_nothing(tmp_path, damage, message):
    model, opt = trained_model_and_optimizer()
    path = tmp_path / "m.h5"
    tf.save(path, model, opt)
    with h5py.File(path, "a") as f:
        damage(f["optimizer"])
    target, target_opt = trained_model_and_optimizer(seed=1, steps=1)
    before = [p.data.copy() for p in target.parameters()] + [a.copy() for a in target_opt.m]
    with pytest.raises(tf.CheckpointError, match=message):
        tf.load(path, target, target_opt)
    after = [p.data for p in target.parameters()] + list(target_opt.m)
    assert all(np.array_equal(b, a) for b, a in zip(before, after))
    assert target_opt.t == 1 and target_opt.lr == 3e-3


def test_every_optimizer_hyperparameter_is_restored(tmp_path):
    model = mnist_model()
    opt = optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99), eps=1e-6)
    tf.save(tmp_path / "m.h5", model, opt)
    fresh = optim.Adam(model.parameters())
    tf.load(tmp_path / "m.h5", model, fresh)
    assert (fresh.lr, fresh.betas, fresh.eps, fresh.t) == (1e-3, (0.8, 0.99), 1e-6, 0)
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    tf.save(tmp_path / "s.h5", model, sgd)
    other = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    tf.load(tmp_path / "s.h5", model, other)
    assert (other.lr, other.momentum) == (0.1, 0.5)


def test_checkpoints_of_the_first_format_still_load():
    """tests/data/checkpoint_format1.h5 was written by tinyflux before checksums (commit 599d691)."""
    data = os.path.join(os.path.dirname(__file__), "data")
    tf.seed(0)
    model = nn.Chain(nn.Conv((3, 3), 1, 2, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.flatten, nn.Dense(8, 3))
    opt = optim.Adam(model.parameters())
    assert tf.load(os.path.join(data, "checkpoint_format1.h5"), model, opt) == {"epoch": 3, "accuracy": 0.5}
    with np.load(os.path.join(data, "checkpoint_format1_expected.npz")) as expected:
        for name, p in model.named_parameters():
            assert np.array_equal(p.data, expected[name])
        assert all(np.array_equal(m, expected[f"m{i}"]) for i, m in enumerate(opt.m))
    assert (opt.lr, opt.betas, opt.eps, opt.t) == (2e-3, (0.8, 0.99), 1e-7, 3)


def crafted_from_format1(tmp_path, craft):
    """A copy of the format-1 checkpoint (no checksums to get past) changed by ``craft(file, weight_name)``."""
    path = tmp_path / "crafted.h5"
    path.write_bytes((Path(__file__).parent / "data" / "checkpoint_format1.h5").read_bytes())
    with h5py.File(path, "a") as f:
        craft(f, "0.weight")
    return path


def format1_model():
    return nn.Chain(nn.Conv((3, 3), 1, 2, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.flatten, nn.Dense(8, 3))


def external_storage(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(18, dtype=np.float32).tobytes())  # any file of the machine, 18 floats long

    def craft(f, name):
        del f["parameters"][name]
        f["parameters"].create_dataset(name, (2, 1, 3, 3), np.float32, external=[(str(secret), 0, 72)])
    return craft


def external_link(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g["parameters/0.weight"] = np.ones((2, 1, 3, 3), np.float32)

    def craft(f, name):
        del f["parameters"][name]
        f["parameters"][name] = h5py.ExternalLink(str(other), "/parameters/0.weight")
    return craft


def external_group(tmp_path):
    def craft(f, name):
        with h5py.File(tmp_path / "group.h5", "w") as g:
            f.copy(f["parameters"], g, "parameters")
        del f["parameters"]
        f["parameters"] = h5py.ExternalLink(str(tmp_path / "group.h5"), "/parameters")
    return craft


def virtual_dataset(tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as g:
        g["data"] = np.ones((2, 1, 3, 3), np.float32)

    def craft(f, name):
        layout = h5py.VirtualLayout((2, 1, 3, 3), np.float32)
        layout[...] = h5py.VirtualSource(str(source), "data", shape=(2, 1, 3, 3))
        del f["parameters"][name]
        f["parameters"].create_virtual_dataset(name, layout)
    return craft


def soft_link(tmp_path):
    def craft(f, name):
        f["elsewhere"] = f["parameters"][name][()]
        del f["parameters"][name]
        f["parameters"][name] = h5py.SoftLink("/elsewhere")
    return craft


@pytest.mark.parametrize("crafted, says", [
    (external_storage, "keeps its bytes in an external file"), (external_link, "is an external link to"),
    (external_group, "/parameters is an external link"), (virtual_dataset, "is a virtual dataset"),
    (soft_link, "is a soft link to /elsewhere")])
def test_a_checkpoint_that_points_outside_itself_is_refused_before_anything_is_read(tmp_path, crafted, says):
    path = crafted_from_format1(tmp_path, crafted(tmp_path))
    model = format1_model()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(tf.CheckpointError, match=f"refused: .*{says}"):
        tf.load(path, model, optim.Adam(model.parameters()))
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_a_checkpoint_with_objects_where_numbers_belong_is_refused_plainly(tmp_path):
    def craft(f, name):
        del f["parameters"][name]
        f["parameters"].create_dataset(name, data=np.array(["a"] * 18, dtype=object).reshape(2, 1, 3, 3),
                                       dtype=h5py.string_dtype())
    with pytest.raises(tf.CheckpointError, match=r"mismatched parameters/0.weight: file has object\(2, 1, 3, 3\)"):
        tf.load(crafted_from_format1(tmp_path, craft), format1_model())


def test_metadata_behind_an_external_link_is_refused(tmp_path):
    def craft(f, name):
        with h5py.File(tmp_path / "m.h5", "w") as g:
            g.create_group("metadata").attrs["epoch"] = 99
        del f["metadata"]
        f["metadata"] = h5py.ExternalLink(str(tmp_path / "m.h5"), "/metadata")
    with pytest.raises(tf.CheckpointError, match="refused: /metadata is an external link"):
        tf.checkpoint.read_metadata(crafted_from_format1(tmp_path, craft))


def test_an_optimizer_of_another_model_is_named(tmp_path):
    model, other = mnist_model(), mnist_model()
    with pytest.raises(ValueError, match=r"save: the optimizer's parameters \[0, 1, .*\] are not parameters"):
        tf.save(tmp_path / "m.h5", model, optim.Adam(other.parameters()))
    tf.save(tmp_path / "m.h5", model, optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="load: the optimizer's parameters"):
        tf.load(tmp_path / "m.h5", model, optim.Adam(other.parameters()))


# -- failed writes ---------------------------------------------------------------------------------------
WRITE_FAILS = """
import resource, signal, sys
import tinyflux as tf
from tinyflux import nn
model = nn.Chain(nn.Dense(300, 100))
tf.save(sys.argv[1], model, epoch=1)                     # the previous checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)             # a write past the limit fails instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # the file system is "full" at 20 kB
try:
    tf.save(sys.argv[1], nn.Chain(nn.Dense(300, 100)), epoch=2)
except tf.CheckpointError as error:
    print("CheckpointError:", error)
print("epoch", tf.load(sys.argv[1], model)["epoch"])
"""


def test_a_write_that_fails_raises_checkpoint_error_and_the_process_exits_cleanly(tmp_path):
    """A real failed write (the file-size limit: EFBIG, as a full disk gives ENOSPC), in a child process so
    that a crash at exit (what h5py does after its own write to a full disk fails) would show."""
    import subprocess
    import sys
    path = tmp_path / "model.h5"
    done = subprocess.run([sys.executable, "-c", WRITE_FAILS, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"CheckpointError: {path}: could not save the checkpoint: File too large" in done.stdout
    assert "epoch 1" in done.stdout  # the previous file is intact
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == ["model.h5"]


@pytest.mark.parametrize("where", ["parent is a file", "name too long"])
def test_unwritable_paths_raise_checkpoint_error_with_the_path(tmp_path, where):
    if where == "parent is a file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "model.h5"
    else:
        path = tmp_path / ("m" * 300 + ".h5")
    expected = "a file, not a folder" if where == "parent is a file" else "could not save the checkpoint"
    with pytest.raises(tf.CheckpointError, match=expected) as info:
        tf.save(path, mnist_model())
    assert str(path) in str(info.value)


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    dead = tmp_path / f".model.h5.{_dead_pid()}.k3j2h1g0.part"  # its process was killed mid-save
    old_style = tmp_path / ".model.h5.a8b7c6d5.part"  # written before temporary names carried a pid
    alive = tmp_path / f".model.h5.{os.getpid()}.q1w2e3r4.part"  # a save in progress: kept
    unrelated = tmp_path / ".notes.txt.part"
    for path in (dead, old_style, alive, unrelated):
        path.write_bytes(b"half a checkpoint")
    tf.save(tmp_path / "model.h5", mnist_model())
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, unrelated.name, "model.h5"])


def _dead_pid() -> int:
    """The process id of a process that has ended (and was reaped), so no process has it now."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_checkpoint_this_user_may_not_read_is_not_called_damaged(tmp_path, monkeypatch):
    model = format1_model()
    tf.save(tmp_path / "m.h5", model)

    def denied(*args, **kwargs):  # as h5py raises it (the suite runs as root, which chmod cannot stop)
        raise PermissionError(13, "Unable to synchronously open file (Permission denied)")
    monkeypatch.setattr(h5py, "File", denied)
    with pytest.raises(tf.CheckpointError, match="m.h5: permission denied: this user may not read the file"):
        tf.load(tmp_path / "m.h5", model)


def test_nan_in_batch_norm_statistics_is_reported_on_loading(tmp_path, caplog):
    model = nn.Chain(nn.Conv((3, 3), 1, 2, pad=1), nn.BatchNorm(2, tf.relu))
    model[1].running_var.data[0] = np.nan
    tf.save(tmp_path / "m.h5", model)
    with caplog.at_level("WARNING"):
        tf.load(tmp_path / "m.h5", model)
    assert "loaded parameters or statistics holding NaN or infinity: 1.running_var" in caplog.text


def test_ctrl_c_during_a_save_comes_after_the_file_is_whole(tmp_path, monkeypatch):
    """Ctrl-C while h5py builds the file (where it may land in a cleanup callback and be lost) is held back
    until the checkpoint is written, then raised."""
    import signal
    model = format1_model()
    build = tf.checkpoint.checkpoint_bytes

    def interrupted_while_building(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return build(*args, **kwargs)
    monkeypatch.setattr(tf.checkpoint, "checkpoint_bytes", interrupted_while_building)
    with pytest.raises(KeyboardInterrupt):
        tf.save(tmp_path / "m.h5", model)
    tf.load(tmp_path / "m.h5", format1_model())  # whole and loadable
