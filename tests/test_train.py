"""tinyflux.train: flags from a dataclass, schedules with state, the step, fit(), and examples/own_model.py as a
user would run it (lock, best checkpoint, exact resume, validation split, NaN stop)."""
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import tinyflux as tf
from tinyflux import nn, optim
from tinyflux.train import flag

ROOT = Path(__file__).resolve().parent.parent


# -- flags from a dataclass ---------------------------------------------------------------------------------
@dataclass
class Knobs(tf.train.Settings):
    width: int = flag(8, "channels of the first layer")
    name: str | None = flag(None, "a name", metavar="NAME")
    mode: str = flag("fast", "how", choices=["fast", "slow"])
    augment: bool = flag(True, "augment the batches")


def test_every_field_is_a_flag_with_its_default_and_help():
    parser = tf.train.make_parser(Knobs, "test")
    text = parser.format_help()
    assert "--width WIDTH" in text and "channels of the first layer" in text and "--name NAME" in text
    assert "--augment, --no-augment" in text and "--resume" in text and "--val-split FRACTION" in text
    knobs = tf.train.parse(Knobs, "test", ["--width", "3", "--name", "a", "--no-augment", "--epochs", "2"])
    assert (knobs.width, knobs.name, knobs.augment, knobs.epochs, knobs.mode) == (3, "a", False, 2, "fast")
    assert tf.train.parse(Knobs, "test", []) == Knobs()


@pytest.mark.parametrize("argv, message", [
    (["--mode", "medium"], "invalid choice: 'medium'"),
    (["--width", "x"], "invalid int value: 'x'"),
    (["--epochs", "0"], "--batch-size, --epochs and --max-steps must be at least 1"),
    (["--val-split", "1.5"], "--val-split: a fraction in [0, 1) expected, got 1.5"),
])
def test_bad_values_are_refused_with_the_flag_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        tf.train.parse(Knobs, "test", argv)
    assert message in capsys.readouterr().err


def test_the_settings_a_resume_must_keep_are_the_fields_not_marked_resumable():
    settings = tf.train.settings_of(Knobs(width=3))
    assert settings["width"] == 3 and settings["lr"] == 1e-3 and settings["mode"] == "fast"
    for free in ("epochs", "savepath", "device", "resume", "force", "plots", "graph", "distributed"):
        assert free not in settings


# -- schedules ------------------------------------------------------------------------------------------------
def test_the_model_zoo_schedule_drops_then_stops_and_its_state_resumes_it():
    opt = optim.SGD([tf.Tensor(np.zeros(1), requires_grad=True)], lr=1.0)
    schedule = tf.train.ModelZoo(patience=2, stop_after=4, min_lr=0.05)
    events = [schedule.update(epoch, acc, opt) for epoch, acc in enumerate([0.5, 0.6, 0.6, 0.5, 0.5], start=1)]
    assert events == [""] * 5 and schedule.best_epoch == 3 and opt.lr == pytest.approx(0.1)  # >= counts as best
    again = tf.train.ModelZoo(patience=2, stop_after=4, min_lr=0.05)
    again.load_state(schedule.state())
    copy = optim.SGD([tf.Tensor(np.zeros(1), requires_grad=True)], lr=opt.lr)
    for epoch in (6, 7, 8, 9, 10):  # a drop after epoch 7; at 0.01 the rate is below min_lr: no more drops
        assert again.update(epoch, 0.5, copy) == schedule.update(epoch, 0.5, opt) == ""
    assert again.update(11, 0.5, copy) == schedule.update(11, 0.5, opt) == "converged"  # 4 epochs after the drop
    assert opt.lr == copy.lr == pytest.approx(0.01)


def test_a_plain_schedule_keeps_the_rate_and_stops_at_its_target():
    opt = optim.SGD([tf.Tensor(np.zeros(1), requires_grad=True)], lr=0.5)
    schedule = tf.train.Schedule(target=0.9)
    assert [schedule.update(e, a, opt) for e, a in ((1, 0.2), (2, 0.1), (3, 0.95))] == \
        ["", "", "reached the target accuracy"]
    assert opt.lr == 0.5 and schedule.best_accuracy == 0.95


# -- the step --------------------------------------------------------------------------------------------------
def test_the_step_is_the_forward_backward_update_sequence(rng):
    x, y = rng.random((8, 1, 8, 8), dtype=np.float32), rng.integers(0, 5, 8)
    models = []
    for _ in range(2):
        tf.seed(1)
        models.append(nn.Chain(nn.Conv((3, 3), 1, 4, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.flatten,
                               nn.Dense(64, 5)))
    step = tf.train.Step(models[0], tf.logit_cross_entropy, optim.Adam(models[0].parameters(), lr=1e-2))
    opt = optim.Adam(models[1].parameters(), lr=1e-2)
    for _ in range(3):
        loss = step(x, y)
        by_hand = tf.logit_cross_entropy(models[1](tf.Tensor(x)), y)
        by_hand.backward()
        opt.step()
        opt.zero_grad()
        assert loss == by_hand.data
    assert all(np.array_equal(a.data, b.data) for a, b in zip(models[0].parameters(), models[1].parameters()))


def test_the_noise_stream_resumes_where_it_was():
    stream = tf.train.RandomStream(3)
    stream.for_epoch(1).standard_normal(5)
    again = tf.train.RandomStream(3)
    again.load_state(stream.state())
    assert np.array_equal(again.for_epoch(2).standard_normal(4), stream.for_epoch(2).standard_normal(4))


# -- fit --------------------------------------------------------------------------------------------------------
def test_fit_gives_the_examples_explicit_loop_bit_for_bit(examples, fake_mnist, tmp_path):
    example = examples("mnist_conv")
    args = example.Args(epochs=2, batch_size=16, max_steps=3, data_dir=str(fake_mnist), device="cpu",
                        savepath=str(tmp_path / "loop"))
    loop = example.train(args)
    (train_images, train_labels), test_set = example.get_processed_data(args)
    fitted = tf.train.fit(lambda shape: example.build_model(args, shape), (train_images, train_labels), test_set,
                          settings=args, augment=example.augment, val_name="Test", savepath=str(tmp_path / "fit"))
    assert fitted == loop
    one = tf.load(tmp_path / "loop" / "mnist_conv.state.h5", example.build_model(args))
    two = tf.load(tmp_path / "fit" / "mnist_conv.state.h5", model := example.build_model(args))
    assert one["epoch"] == two["epoch"] == 2
    reference = example.build_model(args)
    tf.load(tmp_path / "loop" / "mnist_conv.state.h5", reference)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(model.parameters(), reference.parameters()))


def sorted_data(count=64):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], count // 2)  # as video_folder returns them: class by class
    return rng.integers(0, 256, (count, 8, 8)).astype(np.uint8), labels


def tiny_model(shape):
    return nn.Chain(nn.flatten, nn.Dense(int(np.prod(shape)), 2))


def test_data_sorted_by_class_and_not_shuffled_gets_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        tf.train.fit(tiny_model, sorted_data(), epochs=1, shuffle=False, savepath=str(tmp_path / "a"), device="cpu")
    assert "sorted by class and are not shuffled" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tf.train.fit(tiny_model, sorted_data(), epochs=1, savepath=str(tmp_path / "b"), device="cpu")  # shuffles
    assert "sorted by class" not in caplog.text


def test_fit_refuses_a_folder_holding_a_run_before_loading_data(tmp_path):
    tf.train.fit(tiny_model, sorted_data(), epochs=1, savepath=str(tmp_path), device="cpu")

    def no_data():
        raise AssertionError("the data was loaded before the run folder was checked")

    with pytest.raises(tf.train.RunFolderError, match="already holds an earlier run"):
        tf.train.fit(tiny_model, no_data, epochs=1, savepath=str(tmp_path), device="cpu")


def test_float_images_are_not_divided_by_255_again():
    images = np.random.default_rng(0).random((4, 8, 8)).astype(np.float64)
    np.testing.assert_array_equal(tf.data.to_float_images(images)[:, 0], images.astype(np.float32))
    np.testing.assert_allclose(tf.data.to_float_images(np.full((1, 2, 2), 255, np.uint8)), 1.0)
    with pytest.raises(TypeError, match="must be uint8 .* or floating point .*, got uint16"):
        tf.data.to_float_images(np.zeros((1, 2, 2), np.uint16))


def test_fit_trains_on_float_images_as_given(tmp_path):
    """The same examples as uint8 and as floats in [0, 1]: the same run, not one on images 255 times darker."""
    images, labels = sorted_data()
    as_uint8 = tf.train.fit(tiny_model, (images, labels), epochs=2, savepath=str(tmp_path / "a"), device="cpu")
    as_floats = tf.train.fit(tiny_model, (images / 255, labels), epochs=2, savepath=str(tmp_path / "b"),
                             device="cpu")
    np.testing.assert_allclose(as_floats.train_loss, as_uint8.train_loss, rtol=1e-5)


@pytest.mark.parametrize("data, says", [
    ((np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64)), "training data: no examples"),
    (([[0] * 8] * 8, [0, 1] * 4), "images must be an array .* got list"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0])), "4 images but 3 labels"),
    ((np.zeros((4, 8, 8), np.uint16), np.array([0, 1, 0, 1])), "got uint16"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0.0, 1, 0, 1])), "labels must be integers"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, -1])), "class indices from 0, got -1"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 2])), "label 2 has no output: the model scores 2 classes"),
    ((np.zeros((4, 8, 8), np.uint8), np.array([1, 1, 1, 1])), "every label is 1: with one class"),
])
def test_fit_refuses_data_it_cannot_learn_from_with_a_plain_message(tmp_path, data, says):
    with pytest.raises((TypeError, tf.data.DatasetError), match=says):
        tf.train.fit(tiny_model, data, epochs=1, savepath=str(tmp_path), device="cpu")


def test_fit_shuffles_an_h5py_dataset(tmp_path):
    import h5py
    images, labels = sorted_data()
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["images"], f["labels"] = images, labels
    with h5py.File(tmp_path / "data.h5", "r") as f:
        from_file = tf.train.fit(tiny_model, (f["images"], f["labels"]), epochs=2, savepath=str(tmp_path / "a"),
                                 device="cpu")
    in_memory = tf.train.fit(tiny_model, (images, labels), epochs=2, savepath=str(tmp_path / "b"), device="cpu")
    np.testing.assert_allclose(from_file.train_loss, in_memory.train_loss, rtol=1e-5)


# -- examples/own_model.py, as a user runs it -------------------------------------------------------------------
def own_model(*flags):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "own_model.py"), "--device", "cpu", *flags],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_own_model_keeps_every_promise_of_a_run(tmp_path):
    status, log = own_model("--epochs", "3", "--savepath", str(tmp_path / "whole"))
    assert status == 0, log
    assert "[3]: Validation accuracy" in log and "New best accuracy" in log
    assert sorted(os.listdir(tmp_path / "whole")) == ["model.h5", "model.state.h5"]  # no lock left behind

    status, again = own_model("--epochs", "3", "--savepath", str(tmp_path / "whole"))
    assert status == 2 and "already holds an earlier run" in again  # nothing replaced unasked

    status, log = own_model("--epochs", "2", "--savepath", str(tmp_path / "parts"))
    assert status == 0, log
    status, log = own_model("--epochs", "3", "--resume", "--savepath", str(tmp_path / "parts"))
    assert status == 0 and "Resuming the run in" in log, log
    for name in ("model.h5", "model.state.h5"):  # resumed exactly: the same files as the uninterrupted run
        assert (tmp_path / "parts" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()

    status, log = own_model("--lr", "1e30", "--savepath", str(tmp_path / "nan"))
    assert status == 1 and "training diverged" in log and "Traceback" not in log
