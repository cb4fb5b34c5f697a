"""tinyflux.data.augment.ClipAugment: random views of clips, seeded; the evaluation view; flips only when asked."""
import numpy as np
import pytest

from tinyflux.data.augment import ClipAugment, decoded_size


def numbered_clips(batch=3, frames=12, size=10):
    """Clips whose every value says where it is: frame t, row r, column c -> t * 10000 + r * 100 + c."""
    t, r, c = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    clip = (t * 10000 + r * 100 + c).astype(np.float64)
    return np.broadcast_to(clip, (batch, 2, frames, size, size)).copy()


@pytest.mark.parametrize("max_stride", [1, 2])
def test_views_are_crops_of_frames_at_one_stride(max_stride):
    augment = ClipAugment(frames=4, height=6, width=5, jitter=0, max_stride=max_stride)
    views = augment(numbered_clips(batch=20), np.random.default_rng(0))
    assert views.shape == (20, 2, 4, 6, 5)
    strides, firsts = set(), set()
    for view in views[:, 0]:  # (4, 6, 5)
        frames, rows, columns = view[:, 0, 0] // 10000, view[0, :, 0] // 100 % 100, view[0, 0, :] % 100
        assert len(set(np.diff(frames))) == 1  # one stride
        strides.add(int(np.diff(frames)[0]))
        firsts.add(int(frames[0]))
        assert np.array_equal(np.diff(rows), np.ones(5)) and np.array_equal(np.diff(columns), np.ones(4))
        assert frames[-1] < 12 and rows[-1] < 10 and columns[-1] < 10
    assert strides == set(range(1, max_stride + 1)) and len(firsts) > 1  # by default the speed of motion is kept


def test_views_are_repeatable_from_the_generator_and_differ_between_clips():
    augment = ClipAugment(frames=4, height=6, width=6)
    first = augment(numbered_clips() / 1e6, np.random.default_rng(3))
    again = augment(numbered_clips() / 1e6, np.random.default_rng(3))
    assert np.array_equal(first, again)
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("flip", [False, True])
def test_clips_are_mirrored_only_when_asked(flip):
    augment = ClipAugment(frames=2, height=10, width=10, jitter=0, flip=flip)
    views = augment(numbered_clips(batch=40), np.random.default_rng(1))
    mirrored = [bool(view[0, 0, 0, 0] % 100 > view[0, 0, 0, -1] % 100) for view in views]
    assert any(mirrored) == flip and (not flip or not all(mirrored))


def test_light_jitter_keeps_values_in_range_and_changes_each_clip():
    augment = ClipAugment(frames=2, height=4, width=4, jitter=0.5)
    clips = np.random.default_rng(0).random((8, 3, 2, 4, 4), dtype=np.float32)
    views = augment(clips, np.random.default_rng(2))
    assert views.dtype == np.float32 and views.min() >= 0 and views.max() <= 1
    assert not np.allclose(views, clips)


def test_the_evaluation_view_is_the_central_crop_of_the_middle_frames():
    augment = ClipAugment(frames=4, height=6, width=6, max_stride=2)
    view = augment.center(numbered_clips(frames=8))
    assert view.shape == (3, 2, 4, 6, 6)
    assert (view[0, 0, :, 0, 0] // 10000).tolist() == [0, 2, 4, 6]  # the largest stride that fits
    assert (ClipAugment(4, 6, 6).center(numbered_clips(frames=8))[0, 0, :, 0, 0] // 10000).tolist() == [2, 3, 4, 5]
    assert view[0, 0, 0, 0, 0] % 10000 == 2 * 100 + 2  # rows and columns 2..7 of 10
    assert decoded_size(32) == 37 and decoded_size(48) == 56
    with pytest.raises(ValueError, match="clips of 3 frames, fewer than the 4 asked for"):
        augment.center(numbered_clips(frames=3))


def test_the_view_says_how_to_decode_and_is_kept_with_a_model():
    augment = ClipAugment(frames=16, height=48, width=40, flip=True)
    assert augment.decoded() == (20, 56, 46)  # 16 frames and a quarter more; 15% more pixels
    assert ClipAugment(16, 48, 48, max_stride=2).decoded()[0] == 36
    assert ClipAugment.from_saved(augment.saved(), 1, 1, 1) == augment
    old = ClipAugment.from_saved(True, 16, 32, 32)  # models saved before the view was kept: its view then
    assert old.decoded() == (32, 37, 37) and old.max_stride == 2
    for damaged in ('{"frames": 4}', "{", 3):
        with pytest.raises(ValueError, match="expected the text of ClipAugment.saved"):
            ClipAugment.from_saved(damaged, 16, 32, 32)
