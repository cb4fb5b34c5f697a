"""Faults and bad input that used to pass silently or with a confusing message (issue 25), one test each.

Each test names what went wrong before; all of them failed on the code before these fixes."""
import json
import logging

import h5py
import numpy as np
import pytest

import tinyflux as tf
from tinyflux import nn, optim
from tinyflux.data import DatasetError


@pytest.fixture(scope="module")
def example(examples):
    return examples("mnist_conv")


def quick_args(example, fake_mnist, folder, **changes):
    return example.Args(**{"epochs": 1, "batch_size": 16, "max_steps": 2, "data_dir": str(fake_mnist),
                           "savepath": str(folder), "device": "cpu", **changes})


def small_model():
    tf.seed(0)
    return nn.Chain(nn.Conv((3, 3), 1, 2, tf.relu, pad=1), nn.MaxPool((2, 2)), nn.flatten, nn.Dense(2 * 4 * 4, 3))


def set_attribute(path, group, key, value):
    with h5py.File(path, "r+") as f:
        f[group].attrs[key] = value


# -- silent corruption -------------------------------------------------------------------------------------
def test_one_changed_digit_of_the_saved_noise_state_is_reported_as_damage(example, fake_mnist, tmp_path):
    """Before: --resume with an edited generator state ran on, silently different from the uninterrupted run."""
    example.train(quick_args(example, fake_mnist, tmp_path / "run"))
    state = tmp_path / "run" / "mnist_conv.state.h5"
    noise = tf.checkpoint.read_metadata(state)["noise_state"]
    digit = next(i for i, c in enumerate(noise) if c.isdigit() and c != "9")
    set_attribute(state, "metadata", "noise_state", noise[:digit] + str(int(noise[digit]) + 1) + noise[digit + 1:])
    with pytest.raises(tf.CheckpointError, match="is damaged: its metadata attributes changed after it was saved"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=2, resume=True))


def test_an_altered_optimizer_attribute_is_damage_not_a_model_mismatch(tmp_path):
    model = small_model()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    tf.save(tmp_path / "a.h5", model, opt)
    set_attribute(tmp_path / "a.h5", "optimizer", "lr", 0.5)
    other = small_model()
    with pytest.raises(tf.CheckpointError, match="(?s)is damaged or does not fit.*attributes of optimizer"):
        tf.load(tmp_path / "a.h5", other, optim.Adam(other.parameters()))


def test_a_damaged_cached_clip_is_decoded_again(tmp_path, monkeypatch, examples, caplog):
    """Before: one flipped byte in a cached .npy clip gave a wrong clip, and a zero-byte one an EOFError."""
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    root = examples("make_shape_clips").make_set(tmp_path / "clips", train=4, test=4, frames=4, height=12, width=12)
    first, _, _ = tf.data.video_folder(root, "train", frames=4, size=12)
    cached = sorted((tmp_path / "cache" / "video-clips").iterdir())
    assert len(cached) == 4
    data = bytearray(cached[0].read_bytes())
    data[len(data) // 3] ^= 0xFF  # one byte inside the stored clip
    cached[0].write_bytes(bytes(data))
    cached[1].write_bytes(b"")  # a zero-byte file, as a full disk can leave
    with caplog.at_level(logging.WARNING, logger="tinyflux.data"):
        again, _, _ = tf.data.video_folder(root, "train", frames=4, size=12)
    assert np.array_equal(first, again)
    assert caplog.text.count("decoding the clip again") == 2


# -- run folders and resume -----------------------------------------------------------------------------------
def no_data(args):
    raise AssertionError("the data was loaded")


def test_resuming_a_finished_run_says_so_and_how_to_go_on(example, fake_mnist, tmp_path):
    """Before: it reloaded the data, trained nothing and printed the test accuracy."""
    example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=2))
    with pytest.raises(tf.train.RunFolderError, match=r"has finished its 2 epochs; .* such as --epochs 7"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=2, resume=True), get_data=no_data)


def test_a_checkpoint_copied_over_the_state_is_not_a_state_file(example, fake_mnist, tmp_path):
    """Before: seven lines of "the run used None"."""
    example.train(quick_args(example, fake_mnist, tmp_path / "run"))
    folder = tmp_path / "run"
    (folder / "mnist_conv.state.h5").write_bytes((folder / "mnist_conv.h5").read_bytes())
    with pytest.raises(tf.train.RunFolderError, match=r"mnist_conv.state.h5 is not a run state file: it lacks "
                                                      r"stopped, settings, schedule, history, noise_state"):
        example.train(quick_args(example, fake_mnist, folder, epochs=2, resume=True), get_data=no_data)


def test_an_altered_setting_in_the_state_is_damage_not_a_change_of_flags(example, fake_mnist, tmp_path):
    """Before: "--lr: the run used 0.004, now 0.003", as if the user had changed his flags."""
    example.train(quick_args(example, fake_mnist, tmp_path / "run"))
    state = tmp_path / "run" / "mnist_conv.state.h5"
    settings = json.loads(tf.checkpoint.read_metadata(state)["settings"])
    set_attribute(state, "metadata", "settings", json.dumps({**settings, "lr": 0.004}, sort_keys=True))
    with pytest.raises(tf.CheckpointError, match="is damaged"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=2, resume=True), get_data=no_data)


def test_a_failed_state_save_is_named_when_resuming(example, fake_mnist, tmp_path, monkeypatch):
    """Before: "from an older tinyflux or a run that never finished an epoch" after a full disk."""
    def disk_full(*args, **kwargs):
        raise tf.CheckpointError("could not save the checkpoint: No space left on device")

    monkeypatch.setattr(tf.train.RunFolder, "save_state", disk_full)
    with pytest.raises(tf.CheckpointError, match="No space left"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run"))
    monkeypatch.undo()
    with pytest.raises(tf.train.RunFolderError, match=r"a best model saved after epoch 1 .* but no state: the save "
                                                      r"of the run state failed"):
        example.train(quick_args(example, fake_mnist, tmp_path / "run", epochs=2, resume=True), get_data=no_data)


# -- video folders and prediction ---------------------------------------------------------------------------
@pytest.fixture
def clip_root(tmp_path, monkeypatch, examples):
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    return examples("make_shape_clips").make_set(tmp_path / "clips", train=4, test=4, frames=4, height=12, width=12)


def test_a_truncated_video_says_damaged_or_truncated(clip_root):
    """Before: "no video stream in the file"."""
    clip = next((clip_root / "train" / "up").glob("*.mp4"))
    clip.write_bytes(clip.read_bytes()[:200])
    with pytest.raises(DatasetError, match=f"{clip}: .*damaged or truncated"):
        tf.data.video_folder(clip_root, "train", frames=4, size=12)


def test_a_frame_that_is_not_an_image_is_named(clip_root):
    """Before: the error named the folder and quoted avcodec_send_packet()."""
    folder = clip_root / "train" / "up" / "frames"
    folder.mkdir()
    (folder / "0001.png").write_bytes(b"not an image at all" * 10)
    with pytest.raises(DatasetError, match=f"{folder / '0001.png'}: a frame of the clip {folder} that FFmpeg"):
        tf.data.video_folder(clip_root, "train", frames=4, size=12)


def test_clips_that_cannot_fit_in_memory_are_refused_before_anything_is_written(clip_root, tmp_path):
    """Before: --frames 100000 wrote 1.8 GB of cache, then died with a raw _ArrayMemoryError."""
    with pytest.raises(DatasetError, match=r"would take .* GiB .* more than half of the .* GiB "):
        tf.data.video_folder(clip_root, "train", frames=10_000_000, size=12)
    assert not (tmp_path / "cache" / "video-clips").exists() or not any((tmp_path / "cache" / "video-clips").iterdir())


def test_a_training_split_of_one_class_is_refused(clip_root):
    """Before: it trained to "accuracy 1.0000, Early-exiting"."""
    for name in ("down", "left", "right"):
        for clip in (clip_root / "train" / name).iterdir():
            clip.unlink()
        (clip_root / "train" / name).rmdir()
    with pytest.raises(DatasetError, match="one class folder \\(up\\); telling classes apart needs at least two"):
        tf.data.video_folder(clip_root, "train", frames=4, size=12)


def test_predict_with_an_image_model_says_it_is_an_image_model(example, examples, fake_mnist, tmp_path):
    """Before: "saved without its input shape and class names (an older tinyflux)"."""
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    example.train(quick_args(example, fake_mnist, tmp_path / "run"))
    video = examples("video_conv")
    args = video.parse_args(["--predict", str(tmp_path), "--savepath", str(tmp_path / "run"),
                             "--checkpoint", "mnist_conv.h5", "--device", "cpu"])
    with pytest.raises(tf.CheckpointError, match=r"a model for input \(1, 28, 28\) without class names"):
        video.predict_clips(args)


def test_a_validation_split_that_leaves_nothing_is_a_one_line_error(example, fake_mnist, tmp_path, caplog):
    """Before: a ValueError traceback."""
    args = quick_args(example, fake_mnist, tmp_path / "run", val_split=0.999)
    with caplog.at_level(logging.ERROR):
        assert tf.train.run_command(example.main, args) == 2
    assert "--val-split 0.999: 64 of 64 examples would be held out" in caplog.text


# -- the API and checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["a string", None])
def test_a_string_or_none_as_input_names_what_came(bad):
    """Before: "got shape ()"."""
    with pytest.raises(TypeError, match=f"Tensor: numbers expected .* got {type(bad).__name__}"):
        small_model()(bad)


def test_a_float64_gradient_into_a_float32_graph_is_refused():
    y = tf.Tensor(np.ones(3, np.float32), requires_grad=True) * 2
    with pytest.raises(TypeError, match="a float64 gradient for a float32 tensor"):
        y.backward(np.ones(3))


def test_backward_after_the_optimizer_changed_the_parameters_is_refused():
    model = small_model()
    opt = optim.Adam(model.parameters())
    x, labels = np.ones((2, 1, 8, 8), np.float32), np.array([0, 1])
    stale = tf.logit_cross_entropy(model(tf.Tensor(x)), labels)
    tf.logit_cross_entropy(model(tf.Tensor(x)), labels).backward()
    opt.step()
    with pytest.raises(RuntimeError, match="was changed by the optimizer after this graph was computed"):
        stale.backward()


def test_a_gradient_of_the_wrong_shape_is_named():
    """Before: NumPy's raw broadcast error."""
    model = small_model()
    opt = optim.Adam(model.parameters())
    model.parameters()[0].grad = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"parameter 0 is float32\(2, 1, 3, 3\) but its gradient is float32\(3,\)"):
        opt.step()


def test_gpu_refuses_what_cannot_be_moved_on_every_machine():
    """Before: tf.gpu("abc") returned "abc" on a machine without a GPU."""
    with pytest.raises(TypeError, match="cannot move a str"):
        tf.gpu("abc")


def test_save_names_each_wrong_argument_and_path(tmp_path, monkeypatch):
    model = small_model()
    (tmp_path / "a file").write_text("x")
    with pytest.raises(tf.CheckpointError, match="a file, not a folder"):  # before: "File exists"
        tf.save(tmp_path / "a file" / "model.h5", model)
    with pytest.raises(TypeError, match=r"the first argument is the file's path, got a Chain; the call is "
                                        r"tf.save\(path, model, optimizer\)"):
        tf.save(model, tmp_path / "model.h5")
    with pytest.raises(TypeError, match="an optimizer object .* got str 'adam'"):
        tf.save(tmp_path / "model.h5", model, "adam")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tf.save("~/model.h5", model)  # before: a folder named "~" in the current folder
    assert (tmp_path / "home" / "model.h5").is_file()
    long_name = "m" * 250 + ".h5"  # a valid name: 253 bytes; before, its temporary name was too long
    tf.save(tmp_path / long_name, model)
    assert (tmp_path / long_name).is_file() and not list(tmp_path.glob(".*.part"))


def test_nan_weights_are_saved_and_loaded_with_a_warning(tmp_path, caplog):
    model = small_model()
    model.parameters()[0].data[0, 0, 0, 0] = np.nan
    with caplog.at_level(logging.WARNING, logger="tinyflux"):
        tf.save(tmp_path / "nan.h5", model)
        tf.load(tmp_path / "nan.h5", small_model())
    assert "saving parameters or statistics holding NaN or infinity: 0.weight" in caplog.text
    assert "loaded parameters or statistics holding NaN or infinity: 0.weight" in caplog.text


def test_huge_logits_give_a_finite_loss_where_the_true_class_wins():
    """Before: NaN (0 * -inf in the one-hot product), where PyTorch gives 0."""
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the case under test
        loss = tf.logit_cross_entropy(tf.Tensor(np.array([[3e38, -3e38, 0.0]], np.float32)), np.array([0]))
    assert float(loss.data) == 0.0


def test_fit_says_that_a_given_model_starts_a_new_run(tmp_path, caplog):
    """Before: train(build=...) with a trained model restarted Adam and the epochs without a word."""
    images, labels = np.zeros((8, 4, 4), np.uint8), np.arange(8) % 2
    with caplog.at_level(logging.INFO):
        tf.train.fit(nn.Chain(nn.flatten, nn.Dense(16, 2)), (images, labels), epochs=1, savepath=str(tmp_path),
                     device="cpu")
    assert "A new run in" in caplog.text and "from the model's current weights" in caplog.text


def test_a_file_as_the_data_folder_is_named(tmp_path):
    """Before: "not found (file/t10k-...)"."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="a file; the dataset's root .* is the folder holding"):
        tf.data.load("mnist", "test", root=tmp_path / "file")
