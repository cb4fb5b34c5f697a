"""examples/mnist_conv.py: its arguments, model and the epoch schedule (best checkpoint, lr drops, stops),
run on a tiny fake MNIST so that no download is needed."""
import logging

import numpy as np
import pytest

import tinyflux as tf
from conftest import DEVICES


@pytest.fixture(scope="module")
def example(examples):
    return examples("mnist_conv")


def test_defaults_are_the_model_zoo_ones(example):
    args = example.parse_args([])
    assert (args.lr, args.epochs, args.batch_size, args.savepath) == (3e-3, 20, 128, "./")
    assert args.dataset == "mnist" and args.device == "auto" and not args.shuffle and args.max_steps is None
    assert example.build_model(args).num_parameters() == 16_938
    with pytest.raises(SystemExit):
        example.parse_args(["--batch-size", "0"])


@pytest.mark.parametrize("device", DEVICES)
def test_train_saves_the_best_model_and_test_reloads_it(example, fake_mnist, tmp_path, caplog, capsys, device):
    args = example.Args(epochs=2, batch_size=16, max_steps=2, data_dir=str(fake_mnist),
                        savepath=str(tmp_path / "run"), device=device)
    with caplog.at_level(logging.INFO):
        history = example.train(args)
    assert "[1]: Test accuracy: " in caplog.text and "[2]: Test accuracy: " in caplog.text
    best = history.best_accuracy
    assert best == max(history.test_accuracy) and len(history.train_loss) == len(history.lr) == 2
    meta = tf.load(tmp_path / "run" / "mnist_conv.h5", example.build_model(args))
    assert meta["accuracy"] == best and meta["epoch"] in (1, 2) and meta["lr"] == 3e-3
    assert example.test(args) == best
    assert f"accuracy(test_set, model) = {best:.4f}" in capsys.readouterr().out


def test_schedule_drops_the_learning_rate_then_stops(example, fake_mnist, tmp_path, caplog, monkeypatch):
    """Scripted accuracies: improve for 2 epochs, then stall. The original's rules: save at >= best,
    divide lr by 10 after 5 epochs without improvement while lr > 1e-6 (and restart the count), and
    stop after 10 epochs without improvement, which can only happen once lr is at most 1e-6."""
    scripted = iter([0.5, 0.6] + [0.55] * 40)
    monkeypatch.setattr(tf.train, "accuracy", lambda *a, **k: next(scripted))
    args = example.Args(epochs=40, batch_size=16, max_steps=1, data_dir=str(fake_mnist),
                        savepath=str(tmp_path / "run"), device="cpu")
    with caplog.at_level(logging.INFO):
        example.train(args)
    text = caplog.text
    assert text.count("New best accuracy") == 2
    drops = [line for line in text.splitlines() if "dropping learning rate" in line]
    assert [line.split("rate to ")[1] for line in drops] == ["0.0003!", "3e-05!", "3e-06!", "3e-07!"]
    assert "We're calling this converged." in text
    # drops after epochs 7, 12, 17 and 22; then 10 epochs without improvement: stop after epoch 32
    assert "[32]: Test accuracy" in text and "[33]:" not in text


def test_early_exit_keeps_the_model_that_reached_the_target(example, fake_mnist, tmp_path, caplog, monkeypatch):
    scripted = iter([0.9995, 0.5])
    monkeypatch.setattr(tf.train, "accuracy", lambda *a, **k: next(scripted))
    args = example.Args(epochs=5, batch_size=16, max_steps=1, data_dir=str(fake_mnist),
                        savepath=str(tmp_path / "run"), device="cpu")
    with caplog.at_level(logging.INFO):
        history = example.train(args)
    assert history.test_accuracy == [0.9995] and "Early-exiting" in caplog.text
    assert tf.load(tmp_path / "run" / "mnist_conv.h5", example.build_model(args))["accuracy"] == 0.9995


def test_plots_are_written_as_png(example, fake_mnist, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    args = example.parse_args(["--epochs", "2", "--batch-size", "16", "--max-steps", "2", "--device", "cpu",
                               "--data-dir", str(fake_mnist), "--savepath", str(tmp_path / "run"),
                               "--plots", str(tmp_path / "plots")])
    history = example.train(args)
    example.make_plots(args, history)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["first_layer_filters.png", "predictions.png", "training_curves.png"]
    for name in names:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_device_gpu_without_a_gpu_fails_before_loading(example, monkeypatch, capsys):
    monkeypatch.setattr(tf.train.flags, "cupy_available", lambda: False)
    with pytest.raises(SystemExit):
        example.parse_args(["--device", "gpu"])
    assert "--device gpu: no usable CUDA GPU" in capsys.readouterr().err


def test_plots_without_matplotlib_fail_before_training(example, monkeypatch, capsys):
    monkeypatch.setattr(tf.train.flags.plots, "available", lambda: False)
    with pytest.raises(SystemExit):
        example.parse_args(["--plots", "somewhere"])
    assert "pip install 'tinyflux[plot]'" in capsys.readouterr().err


@pytest.mark.parametrize("device, backends", [("cpu", ["numpy", "cupy"]), ("auto", ["numpy"])])
def test_graph_on_the_cpu_fails_before_loading(example, monkeypatch, capsys, device, backends):
    monkeypatch.setattr(tf.train.flags, "cupy_available", lambda: "cupy" in backends)
    with pytest.raises(SystemExit):
        example.parse_args(["--graph", "--device", device])
    assert f"--graph: CUDA graphs need a CUDA GPU, and this run is on the CPU (--device {device}" \
        in capsys.readouterr().err
    monkeypatch.setattr(tf.train.flags, "cupy_available", lambda: True)
    assert example.parse_args(["--graph"]).graph  # auto with a GPU: accepted


def test_a_validation_split_chooses_the_model_and_the_test_set_is_scored_once(example, fake_mnist, tmp_path,
                                                                                caplog, capsys, monkeypatch):
    scored = []
    real_accuracy = tf.train.accuracy

    def recording_accuracy(images, labels, model, comm=None):
        scored.append(len(images))
        return real_accuracy(images, labels, model, comm)

    monkeypatch.setattr(tf.train, "accuracy", recording_accuracy)
    args = example.Args(epochs=2, batch_size=16, max_steps=2, data_dir=str(fake_mnist), val_split=0.25,
                        savepath=str(tmp_path / "run"), device="cpu")
    with caplog.at_level(logging.INFO):
        history = example.train(args)
    assert "Holding out 16 training examples for validation; training on 48" in caplog.text
    assert "[1]: Validation accuracy: " in caplog.text and "Test accuracy" not in caplog.text
    assert scored == [16, 16]  # the 64 fake training images less a quarter; never the 32 test images
    example.test(args)
    assert scored[-1] == 32  # test(): the test set, once, at the end
    assert history.best_accuracy == max(history.test_accuracy)


def test_the_validation_split_is_a_fixed_seeded_choice(example):
    images, labels = np.arange(20).reshape(20, 1, 1), np.arange(20)
    (train, train_labels), (held, held_labels) = tf.train.split_validation(images, labels, 0.2, seed=3)
    again = tf.train.split_validation(images, labels, 0.2, seed=3)
    assert np.array_equal(held, again[1][0]) and len(held) == 4 and len(train) == 16
    assert sorted(train_labels.tolist() + held_labels.tolist()) == list(range(20))  # each example once
    assert np.all(np.diff(train_labels) > 0)  # the kept examples keep their order
    with pytest.raises(tf.data.DatasetError, match="both parts need at least one"):
        tf.train.split_validation(images[:2], labels[:2], 0.1, seed=0)
    with pytest.raises(SystemExit):
        example.parse_args(["--val-split", "1"])


def test_the_model_is_built_for_the_datas_shape(example, fake_mnist, tmp_path):
    args = example.Args(epochs=1, batch_size=16, max_steps=1, data_dir=str(fake_mnist),
                        savepath=str(tmp_path / "run"), device="cpu")
    example.train(args)
    assert tf.checkpoint.read_metadata(tmp_path / "run" / "mnist_conv.h5")["input_shape"] == [1, 28, 28]
    colour = example.build_model(args, input_shape=(3, 32, 32))
    assert colour[0].in_channels == 3 and colour[-1].in_features == 4 * 4 * 32


def test_the_examples_model_is_the_libraries_model_zoo_network(example):
    """build_model writes the network out to be read; tinyflux.models.mnist_convnet is the same network, for the
    benchmark, the CI scripts and the tests."""
    assert repr(example.build_model(example.Args())) == repr(tf.models.mnist_convnet())
    assert repr(example.build_model(example.Args(), input_shape=(3, 32, 32))) == \
        repr(tf.models.mnist_convnet(in_channels=3, size=(32, 32)))
