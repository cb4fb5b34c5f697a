"""examples/video_conv.py: the moving-digit clips, their cache, the 3-D model, and a short run of the shared loop;
real clips through --video-dir and --predict."""
import json
import logging

import numpy as np
import pytest

import tinyflux as tf
from tinyflux.data import moving_digits as moving
from conftest import DEVICES


@pytest.fixture(scope="module")
def video(examples):
    return examples("video_conv")


def test_clips_show_the_labelled_digit_moving_in_the_labelled_direction(video):
    digits = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    digit_labels = np.array([3, 1, 4, 1, 5], np.uint8)
    small = digits.reshape(5, 14, 2, 14, 2).mean(axis=(2, 4)).round().astype(np.uint8)  # what a clip shows
    clips, labels = moving.make_clips(digits, digit_labels, 40, 8, 21, np.random.default_rng(1))
    assert clips.shape == (40, 8, 21, 21) and clips.dtype == np.uint8 and labels.shape == (40,)
    assert len(moving.CLASSES) == 80 and moving.CLASSES[8 * 3 + 2] == "3 down"
    assert len(set(labels % 8)) == 8
    steps = list(moving.DIRECTIONS.values())
    for clip, label in zip(clips, labels):
        digit, direction = divmod(int(label), 8)
        for t in range(7):  # frame t + 1 is frame t moved by the direction's (rows, columns)
            assert np.array_equal(clip[t + 1], np.roll(clip[t], steps[direction], axis=(0, 1)))
        for t in (0, 7):  # the first and last frames hold one whole image of that digit, and nothing else
            assert any(shows(clip[t], image) for image, d in zip(small, digit_labels) if d == digit)


def shows(frame, image):
    """Whether ``frame`` is ``image`` drawn somewhere on black (the frame's sum is the image's sum)."""
    h, w = image.shape
    return int(frame.sum()) == int(image.sum()) and any(
        np.array_equal(frame[r:r + h, c:c + w], image)
        for r in range(frame.shape[0] - h + 1) for c in range(frame.shape[1] - w + 1))


def test_clips_are_repeatable_from_the_seed(video):
    digits = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    digit_labels = np.arange(5, dtype=np.uint8)
    first = moving.make_clips(digits, digit_labels, 10, 8, 30, np.random.default_rng(7))
    again = moving.make_clips(digits, digit_labels, 10, 8, 30, np.random.default_rng(7))
    other = moving.make_clips(digits, digit_labels, 10, 8, 30, np.random.default_rng(8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_clips_are_cached_without_leftovers(fake_mnist, tmp_path, monkeypatch):
    clips, labels = moving.clips("train", 12, frames=8, size=28, root=str(fake_mnist))
    assert clips.shape == (12, 8, 28, 28)
    cached = list((tmp_path / "cache" / "moving-digits").iterdir())
    assert [p.name for p in cached] == [f"v{moving.CLIP_FORMAT}-mnist-train-12x8x28x28-seed0.npz"]  # no temp file

    def no_download(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(moving, "load", no_download)
    again, again_labels = moving.clips("train", 12, frames=8, size=28, root=str(fake_mnist))
    assert np.array_equal(clips, again) and np.array_equal(labels, again_labels)


def test_damaged_cached_clips_are_made_again(fake_mnist, tmp_path, caplog):
    clips, labels = moving.clips("train", 12, frames=8, size=28, root=str(fake_mnist))
    [path] = (tmp_path / "cache" / "moving-digits").iterdir()
    with np.load(path) as stored:
        tampered = {key: stored[key].copy() for key in stored.files}
    tampered["labels"][0] ^= 1  # one label changed, the file still a valid .npz
    np.savez(path, **tampered)
    with caplog.at_level("WARNING"):
        again, again_labels = moving.clips("train", 12, frames=8, size=28, root=str(fake_mnist))
    assert "damaged cached clips (the values fail their checksum); making them again" in caplog.text
    assert np.array_equal(clips, again) and np.array_equal(labels, again_labels)


def test_model_shapes_and_bad_arguments(video):
    model = video.build_model(video.parse_args([]))
    summary = model.summary((1, 16, 32, 32))
    assert summary.rows[1][1] == (8, 16, 32, 32) and summary.rows[-3][1] == (1024,) and summary.rows[-2][1] == (80,)
    assert video.build_model(video.parse_args(["--frames", "8", "--size", "28"]))(
        tf.Tensor(np.zeros((2, 1, 8, 28, 28), np.float32))).shape == (2, 80)
    for bad in (["--frames", "4"], ["--size", "28"], ["--train-clips", "0"]):
        with pytest.raises(SystemExit):
            video.parse_args(bad)


def test_fit_trains_saves_and_tests_clips(video, fake_mnist, tmp_path, caplog, capsys):
    args = video.parse_args(["--epochs", "2", "--max-steps", "2", "--batch-size", "4", "--frames", "8",
                             "--size", "28", "--train-clips", "16", "--test-clips", "8", "--device", "cpu",
                             "--data-dir", str(fake_mnist), "--savepath", str(tmp_path / "run")])
    with caplog.at_level(logging.INFO):
        history = video.main(args)
    assert "[2]: Test accuracy: " in caplog.text and len(history.test_accuracy) == 2
    assert (tmp_path / "run" / "video_conv.h5").is_file() and not (tmp_path / "run" / "mnist_conv.h5").exists()
    out = capsys.readouterr().out
    assert f"accuracy(test_set, model) = {history.best_accuracy:.4f}" in out
    assert video.test(args) == history.best_accuracy
    digit, direction = (float(word.strip(",")) for word in out.split("digit right: ")[1].split()[::3][:2])
    assert history.best_accuracy <= min(digit, direction) and 0 <= digit <= 1 and 0 <= direction <= 1
    assert tf.checkpoint.read_metadata(tmp_path / "run" / "video_conv.h5")["classes"] == moving.CLASSES
    if tf.plots.available():
        args.plots = str(tmp_path / "plots")
        video.make_plots(args, history, moving.CLASSES)
        assert len(list((tmp_path / "plots").glob("video_*.png"))) == 4  # curves, clips, confusion, filters


@pytest.mark.parametrize("device", DEVICES)
def test_real_clips_train_end_to_end_and_predict_names_a_class(video, examples, tmp_path, monkeypatch, capsys,
                                                               caplog, device):
    """--video-dir on mp4 files written by examples/make_shape_clips.py, then --predict on one of them."""
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    shapes = examples("make_shape_clips")
    root = shapes.make_set(tmp_path / "clips", train=8, test=4, frames=8, height=16, width=16)
    args = video.parse_args(["--video-dir", str(root), "--frames", "8", "--size", "16", "--epochs", "2",
                             "--batch-size", "4", "--device", device, "--savepath", str(tmp_path / "run")])
    with caplog.at_level(logging.INFO):
        video.main(args)
    assert "[2]: Test accuracy: " in caplog.text and "accuracy(test_set, model) = " in capsys.readouterr().out
    saved = tf.checkpoint.read_metadata(tmp_path / "run" / "video_conv.h5")
    assert saved["classes"] == ["down", "left", "right", "up"] and saved["input_shape"] == [3, 8, 16, 16]

    assert saved["network"] == "bn" and saved["augment"] and saved["standardize"]  # the defaults for own clips

    clip = root / "test" / "down" / "clip0003.mp4"  # clip i moves in direction i % 4: left, right, up, down
    predict = video.parse_args(["--predict", str(clip), "--savepath", str(tmp_path / "run"), "--device", device])
    [(name, ranked)] = video.predict_clips(predict, top=4)
    out = capsys.readouterr().out
    assert name == str(clip) and sorted(c for c, _ in ranked) == saved["classes"]
    assert abs(sum(p for _, p in ranked) - 1) < 1e-5 and ranked[0][1] >= ranked[-1][1]
    assert f"{clip}: {ranked[0][0]} {ranked[0][1]:.4f}" in out

    folder = video.parse_args(["--predict", str(root / "test" / "up"), "--savepath", str(tmp_path / "run"),
                               "--out", str(tmp_path / "answers.csv"), "--device", device])
    rows = video.predict_clips(folder)
    lines = (tmp_path / "answers.csv").read_text().splitlines()
    assert len(rows) == 1 and lines[0] == "clip,class1,p1,class2,p2,class3,p3" and len(lines) == 2
    assert lines[1].startswith(str(root / "test" / "up")) and rows[0][1][0][0] in lines[1]
    (root / "test" / "up" / "cover.jpg").write_bytes(b"a picture beside the clips, not a frame of one")
    with caplog.at_level(logging.WARNING):
        rows = video.predict_clips(video.parse_args(["--predict", str(root / "test" / "up"), "--savepath",
                                                     str(tmp_path / "run"), "--device", device]))
    assert [name for name, _ in rows] == [str(p) for p in sorted((root / "test" / "up").glob("*.mp4"))]
    assert "left out, not clips: cover.jpg" in caplog.text

    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'tinyflux[onnxruntime]')")
    from test_interop import run_in_onnxruntime  # --export-onnx builds the model as trained, without --video-dir
    video.main(video.parse_args(["--savepath", str(tmp_path / "run"), "--export-onnx", str(tmp_path / "clips.onnx")]))
    x = np.random.default_rng(0).random((2, 3, 8, 16, 16), dtype=np.float32)
    trained = video.load_best_model(predict, len(saved["classes"]))
    assert isinstance(trained[0], tf.nn.InstanceNorm)
    on_device = trained(tf.Tensor(tf.device.on_model_device(x, trained))).data  # --device's arrays
    np.testing.assert_allclose(run_in_onnxruntime(tmp_path / "clips.onnx", x), tf.cpu(on_device),
                               rtol=1e-4, atol=1e-5)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "clips.onnx"), providers=["CPUExecutionProvider"])
    kept = session.get_modelmeta().custom_metadata_map  # what a program running the file needs to know
    assert json.loads(kept["classes"]) == saved["classes"] and json.loads(kept["input_shape"]) == [3, 8, 16, 16]


def test_every_own_clips_default_can_be_turned_off(video):
    own = ["--video-dir", "clips"]
    on = video.parse_args(own)
    off = video.parse_args(own + ["--no-augment", "--no-standardize", "--no-shuffle", "--model", "small"])
    assert (on.augment, on.standardize, on.shuffle, on.model) == (True, True, True, "bn")
    assert (off.augment, off.standardize, off.shuffle, off.model) == (False, False, False, "small")
    assert not video.parse_args([]).augment  # generated digits: no augmentation unless asked


def test_predict_with_a_model_of_generated_clips_says_why_not(video, fake_mnist, tmp_path):
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    args = video.parse_args(["--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--frames", "8",
                             "--size", "28", "--train-clips", "8", "--test-clips", "4", "--device", "cpu",
                             "--data-dir", str(fake_mnist), "--savepath", str(tmp_path / "run")])
    video.main(args)
    args.predict = str(tmp_path)  # any existing path: the model is refused before the clip is read
    with pytest.raises(tf.CheckpointError,
                       match=r"a model for input \(1, 8, 28, 28\); --predict needs one trained on colour clips"):
        video.predict_clips(args)


def test_the_examples_model_is_the_libraries_video_network(video):
    assert repr(video.build_model(video.VideoArgs())) == repr(tf.models.video_convnet())
    assert repr(video.build_model(video.VideoArgs(), input_shape=(3, 8, 24, 24), nclasses=4)) == \
        repr(tf.models.video_convnet(in_channels=3, classes=4, frames=8, size=(24, 24)))
