"""examples/make_motion_clips.py: in every set, the painted object moves as its class says, and nothing else does."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def motion(examples):
    examples("make_shape_clips")  # its writers, imported by make_motion_clips
    return examples("make_motion_clips")


def painted(frame):
    """(rows, cols) of the object in one uint8 frame (H, W, 3): the one colour that many pixels share exactly
    (the background's noise makes every other pixel differ)."""
    colours, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
    mask = np.all(frame == colours[counts.argmax()], axis=-1)  # (H, W)
    return np.nonzero(mask)


def centres(video):
    """(T, 2): the object's centre, rows and columns, in each frame."""
    return np.array([[np.mean(axis) for axis in painted(frame)] for frame in video])


@pytest.mark.parametrize("kind", ["direction", "background", "uneven"])
def test_the_square_moves_in_the_direction_of_its_class(motion, kind):
    rng = np.random.default_rng(0)
    for _ in range(3):
        for name, step in motion.DIRECTIONS.items():
            frames = int(rng.integers(10, 41)) if kind == "uneven" else 20
            path = centres(motion.draw_clip(rng, kind, name, frames, 48, 48))
            moves = np.sign(np.round(np.diff(path, axis=0), 6))  # (T - 1, 2): every step the same way
            assert np.all(moves == step), (kind, name, path)


def test_speed_is_one_or_two_pixels_a_frame_in_any_direction(motion):
    rng = np.random.default_rng(1)
    for name, speed in motion.SPEEDS.items():
        for _ in range(4):
            steps = np.abs(np.diff(centres(motion.draw_clip(rng, "speed", name, 20, 48, 48)), axis=0)).sum(axis=1)
            np.testing.assert_allclose(steps, speed)


def test_the_bar_turns_the_way_of_its_class(motion):
    rng = np.random.default_rng(2)
    for name, sign in (("anticlockwise", 1), ("clockwise", -1)):
        for _ in range(3):
            angles = []
            for frame in motion.draw_clip(rng, "rotation", name, 20, 48, 48):
                rows, cols = painted(frame)
                up, right = -(rows - rows.mean()), cols - cols.mean()  # rows grow downwards
                angles.append(0.5 * np.arctan2(2 * np.mean(up * right), np.mean(right ** 2) - np.mean(up ** 2)))
            turns = np.diff(np.unwrap(2 * np.array(angles)) / 2)  # a bar's angle is defined up to pi
            assert np.all(np.sign(turns) == sign), (name, turns)


def test_a_set_is_written_in_the_layout_video_folder_reads(motion, tmp_path):
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")
    import tinyflux as tf
    root = motion.make_set(tmp_path / "speed", "speed", train=4, test=3, frames=8, size=24)
    paths, labels, classes = tf.data.video.find_clips(root, "train")
    assert classes == ["fast", "slow"] and len(paths) == 4 and sorted(labels) == [0, 0, 1, 1]
    assert len(tf.data.video.find_clips(root, "test")[0]) == 3  # in all, not per class
    with pytest.raises(FileExistsError, match="already holds files"):
        motion.make_set(root, "speed", train=1, test=1, frames=8, size=24)
