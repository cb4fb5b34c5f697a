"""tinyflux.data.video_folder on clips the tests write themselves with PyAV (mp4 files and PNG frame folders),
and the channel rule of the data helpers."""
import os
import sys

import numpy as np
import pytest

from tinyflux import data
from tinyflux.data import DatasetError, video

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'tinyflux[video]')")


@pytest.fixture(scope="module")
def shapes(examples):
    return examples("make_shape_clips")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYFLUX_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache" / "video-clips"


@pytest.fixture
def clip_set(shapes, tmp_path):
    """4 classes (directions) x 2 training clips and 1 test clip each, 10 frames of 24x24, as mp4."""
    return shapes.make_set(tmp_path / "clips", train=8, test=4, frames=10, height=24, width=24)


def counting_decoder(monkeypatch):
    calls = []
    real = video.decode_clip

    def counted(path, frames, size):
        calls.append(path)
        return real(path, frames, size)

    monkeypatch.setattr(video, "decode_clip", counted)
    return calls


def test_clips_labels_and_classes(clip_set, cache):
    clips, labels, classes = data.video_folder(clip_set, "train", frames=8, size=(16, 12))
    assert clips.shape == (8, 3, 8, 16, 12) and clips.dtype == np.uint8
    assert classes == ["down", "left", "right", "up"]  # sorted folder names
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and labels.dtype == np.int64
    test_clips, test_labels, test_classes = data.video_folder(clip_set, "test", frames=8, size=16)
    assert test_clips.shape == (4, 3, 8, 16, 16) and test_classes == classes and test_labels.tolist() == [0, 1, 2, 3]


def write_counting_clip(shapes, folder, count, as_frames):
    """A clip whose frame t is one flat grey of level 20 * t, so a decoded frame tells which one it was."""
    video_frames = np.stack([np.full((16, 16, 3), 20 * t, np.uint8) for t in range(count)])
    if as_frames:
        shapes.write_frames(folder, video_frames)
    else:
        shapes.write_mp4(folder.with_suffix(".mp4"), video_frames)


@pytest.mark.parametrize("as_frames", [True, False], ids=["frame-folder", "mp4"])
@pytest.mark.parametrize("count, frames", [(10, 4), (12, 12), (3, 5)])
def test_frames_are_spread_evenly_over_the_clip(shapes, tmp_path, cache, as_frames, count, frames):
    write_counting_clip(shapes, tmp_path / "set" / "train" / "a" / "clip", count, as_frames)
    make_class(tmp_path / "set", "train", "b")  # a training split needs two classes
    clips, _, _ = data.video_folder(tmp_path / "set", "train", frames=frames, size=8)
    levels = clips[0].mean(axis=(0, 2, 3))  # (3, T, H, W) -> (T,): the grey level of each kept frame
    expected = 20 * np.linspace(0, count - 1, frames).round()
    assert np.abs(levels - expected).max() <= (0.5 if as_frames else 4)  # mp4 is lossy, PNG is not


def test_the_cache_decodes_each_clip_once_and_again_when_it_changes(clip_set, cache, monkeypatch):
    calls = counting_decoder(monkeypatch)
    first, _, _ = data.video_folder(clip_set, "train", frames=8, size=16)
    assert len(calls) == 8 and len(list(cache.iterdir())) == 8
    calls.clear()
    again, _, _ = data.video_folder(clip_set, "train", frames=8, size=16)
    assert calls == [] and np.array_equal(first, again)
    data.video_folder(clip_set, "train", frames=8, size=20)  # other parameters: other cache entries
    assert len(calls) == 8
    calls.clear()
    changed = clip_set / "train" / "up" / "clip0006.mp4"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    data.video_folder(clip_set, "train", frames=8, size=16)
    assert calls == [changed]
    assert not [p for p in cache.iterdir() if p.suffix != ".npz"]  # no temporary files left


def crafted_npz(claimed_shape) -> bytes:
    """An .npz whose clip.npy header claims ``claimed_shape`` of uint8 but holds 10 bytes."""
    import io
    import zipfile
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": claimed_shape})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("clip.npy", header.getvalue() + b"x" * 10)  # the header writer puts the magic first
        z.writestr("sha256.npy", b"")
    return archive.getvalue()


def test_a_cached_clip_claiming_a_huge_shape_is_decoded_again_not_allocated(clip_set, cache, monkeypatch, caplog):
    first, _, _ = data.video_folder(clip_set, "train", frames=8, size=16)
    victim = sorted(cache.iterdir())[0]
    victim.write_bytes(crafted_npz((10**6, 10**6)))  # a terabyte, if NumPy were asked to make room for it
    with pytest.raises(ValueError, match=r"clip.npy claims \(1000000, 1000000\) uint8 \(1000000000000 bytes\)"):
        from tinyflux.files import read_checked_npz
        read_checked_npz(victim, "clip")
    calls = counting_decoder(monkeypatch)
    with caplog.at_level("WARNING"):
        again, _, _ = data.video_folder(clip_set, "train", frames=8, size=16)
    assert len(calls) == 1 and np.array_equal(first, again) and "a damaged cached clip" in caplog.text


def test_leftovers_of_killed_cache_writes_are_removed(clip_set, cache):
    cache.mkdir(parents=True)
    leftover = cache / ".0123abcd.npz.999999999.k2j3.part"  # a process id that no process has
    leftover.write_bytes(b"half a clip")
    data.video_folder(clip_set, "train", frames=8, size=16)
    assert not leftover.exists()


def test_the_memory_check_takes_the_process_limit_not_the_machine(monkeypatch):
    import resource
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (2**30, resource.RLIM_INFINITY))
    assert video.memory_limit() == (2**30, "this process may use (ulimit -v)")
    with pytest.raises(DatasetError, match=r"would take 1.8 GiB .* more than half of the 1.0 GiB this process may "
                                           r"use \(ulimit -v\)"):
        video._check_fits_in_memory(200, 16, (448, 448), "train")


def test_a_clip_whose_name_is_not_utf8_is_read(clip_set, cache):
    before, labels, _ = data.video_folder(clip_set, "train", frames=8, size=16, cache=False)
    clip = sorted((clip_set / "train" / "up").iterdir())[0]
    try:
        os.rename(clip, os.fsencode(clip.parent) + b"/clip\xff.mp4")  # a byte that is no UTF-8
    except OSError:
        pytest.skip("this file system takes UTF-8 names only")
    after, after_labels, _ = data.video_folder(clip_set, "train", frames=8, size=16)
    assert sorted(map(bytes, after.reshape(8, -1))) == sorted(map(bytes, before.reshape(8, -1)))
    assert np.array_equal(np.sort(after_labels), np.sort(labels))


def test_a_clip_this_user_may_not_read_is_not_called_damaged(clip_set, cache, monkeypatch):
    def denied(av, path):  # as PyAV raises it (the suite runs as root, which chmod cannot stop)
        raise av.error.PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(video, "_opened", denied)
    with pytest.raises(DatasetError, match=r"\.mp4: permission denied: this user may not read it"):
        data.video_folder(clip_set, "train", frames=8, size=16, cache=False)


def test_frame_folders_read_like_video_files(shapes, tmp_path, cache):
    as_mp4 = shapes.make_set(tmp_path / "mp4", train=4, test=0, frames=8, height=16, width=16, seed=3)
    as_png = shapes.make_set(tmp_path / "png", train=4, test=0, frames=8, height=16, width=16, seed=3,
                             as_frames=True)
    from_mp4, labels_mp4, _ = data.video_folder(as_mp4, "train", frames=8, size=16)
    from_png, labels_png, _ = data.video_folder(as_png, "train", frames=8, size=16)
    assert np.array_equal(labels_mp4, labels_png)
    # the same pictures, less what the encoder loses (the noisy background, mostly): frame by frame brightness
    brightness_mp4, brightness_png = from_mp4.mean(axis=(1, 3, 4)), from_png.mean(axis=(1, 3, 4))  # (N, T)
    assert np.abs(brightness_mp4 - brightness_png).max() < 4


def make_class(root, split, name, clips=1):
    folder = root / split / name
    folder.mkdir(parents=True)
    for i in range(clips):
        (folder / f"c{i}").mkdir()
        (folder / f"c{i}" / "0000.png").write_bytes(PNG_PIXEL)
    return folder


def _png_pixel() -> bytes:
    import io
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 1, 1, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((1, 1, 3), 9, np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


PNG_PIXEL = _png_pixel()


def test_bad_clips_and_folders_are_named(tmp_path, cache):
    root = tmp_path / "set"
    make_class(root, "train", "a")
    broken = make_class(root, "train", "b") / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 50)
    with pytest.raises(DatasetError, match=f"{broken}: FFmpeg cannot decode it"):
        data.video_folder(root, "train", frames=2, size=4)
    broken.unlink()
    (root / "train" / "b" / "c0" / "0000.png").unlink()
    with pytest.raises(DatasetError, match=r"c0: a clip folder without frame images .* at least one frame"):
        data.video_folder(root, "train", frames=2, size=4)
    (root / "train" / "b" / "c0").rmdir()
    with pytest.raises(DatasetError, match=f"{root / 'train' / 'b'}: empty class folder"):
        data.video_folder(root, "train", frames=2, size=4)
    (root / "train" / "b" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="notes.txt: neither a video file"):
        data.video_folder(root, "train", frames=2, size=4)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_pipe_or_a_link_loop_named_as_a_video_is_refused_not_read(tmp_path, cache):
    root = tmp_path / "set"
    make_class(root, "train", "a")
    folder = make_class(root, "train", "b")
    os.mkfifo(folder / "pipe.mp4")  # reading it would wait forever for a writer
    with pytest.raises(DatasetError, match=r"pipe.mp4: neither a video file .* \(a pipe, socket or device"):
        data.video_folder(root, "train", frames=2, size=4)
    (folder / "pipe.mp4").unlink()
    os.symlink(folder / "loop.mp4", folder / "loop.mp4")
    with pytest.raises(DatasetError, match=r"loop.mp4: neither a video file .* \(a link to nothing, or a loop"):
        data.video_folder(root, "train", frames=2, size=4)


def test_a_video_without_frames_is_refused(shapes, tmp_path, cache):
    path = tmp_path / "set" / "train" / "a" / "empty.mp4"
    path.parent.mkdir(parents=True)
    with av.open(str(path), "w") as container:  # a valid file with no frame in it
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.start_encoding()  # writes the header, which no packet would otherwise trigger
    assert path.stat().st_size > 0
    make_class(tmp_path / "set", "train", "b")  # a training split needs two classes
    with pytest.raises(DatasetError, match=f"{path}: (FFmpeg finds no video stream|the video has no frames|FFmpeg cannot)"):
        data.video_folder(tmp_path / "set", "train", frames=2, size=4)


def test_a_test_split_must_have_the_training_classes(tmp_path, cache):
    root = tmp_path / "set"
    for name in ("a", "b"):
        make_class(root, "train", name)
    make_class(root, "test", "a")
    make_class(root, "test", "c")
    with pytest.raises(DatasetError, match=r"test: its classes differ .* missing \['b'\], not in training \['c'\]"):
        data.video_folder(root, "test", frames=2, size=4)
    with pytest.raises(DatasetError, match="no such folder"):
        data.video_folder(root, "validation", frames=2, size=4)


def test_without_pyav_the_error_gives_the_install_command(clip_set, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails, as where it is not installed
    assert not video.available()
    with pytest.raises(ImportError, match=r"pip install 'tinyflux\[video\]'"):
        data.video_folder(clip_set, "train")


# -- the channel rule of to_float_images and batches -------------------------------------------------------
@pytest.mark.parametrize("shape, spatial_dims, expected", [
    ((2, 28, 28), None, (2, 1, 28, 28)),  # MNIST: one channel added
    ((2, 3, 8, 16, 16), None, (2, 3, 8, 16, 16)),  # colour clips keep their channels
    ((2, 3, 32, 32), 2, (2, 3, 32, 32)),  # colour images, said so
    ((2, 8, 16, 16), 3, (2, 1, 8, 16, 16)),  # one-channel clips, said so
    ((2, 50), 1, (2, 1, 50)),  # one-channel sequences
])
def test_to_float_images_adds_a_channel_axis_only_where_there_is_none(shape, spatial_dims, expected):
    images = np.full(shape, 255, np.uint8)
    floats = data.to_float_images(images, spatial_dims)
    assert floats.shape == expected and floats.dtype == np.float32 and floats.max() == 1.0


@pytest.mark.parametrize("shape, spatial_dims, message", [
    ((2, 3, 32, 32), None, r"ambiguous: colour images \(N, C, H, W\) or one-channel clips \(N, T, H, W\)"),
    ((2, 3, 4, 5, 6, 7), None, "expected a batch of images"),
    ((2, 3, 32, 32), 1, r"a batch with 1 spatial axes has shape \(N, \*S\) or \(N, C, \*S\)"),
    ((2, 28, 28), 4, "spatial_dims must be 1, 2 or 3"),
])
def test_shapes_the_rule_cannot_read_are_refused(shape, spatial_dims, message):
    with pytest.raises(ValueError, match=message):
        data.to_float_images(np.zeros(shape, np.uint8), spatial_dims)
    with pytest.raises(ValueError, match=message):
        data.batches(np.zeros(shape, np.uint8), np.zeros(shape[0], np.int64), 1, spatial_dims=spatial_dims)


@pytest.mark.parametrize("frames, size, message", [
    (True, 16, "video_folder frames: expected an integer, got True"),
    (0, 16, "video_folder frames: must be at least 1, got 0"),
    (8, (16, 0), r"video_folder size \(H, W\): every value must be at least 1"),
    (8, 16.5, r"video_folder size \(H, W\): expected an integer or 2 integers"),
])
def test_bad_frames_or_sizes_are_refused(clip_set, cache, frames, size, message):
    with pytest.raises((TypeError, ValueError), match=message):
        data.video_folder(clip_set, "train", frames=frames, size=size)


def test_the_clip_maker_never_writes_over_existing_clips(shapes, clip_set):
    before = sorted(p.name for p in (clip_set / "train" / "up").iterdir())
    with pytest.raises(FileExistsError, match="already holds files"):
        shapes.make_set(clip_set, train=4, test=4, frames=4, height=16, width=16)
    assert sorted(p.name for p in (clip_set / "train" / "up").iterdir()) == before


@pytest.mark.parametrize("count, frames", [(30, 8), (7, 12), (16, 16)])
def test_decoding_only_the_chosen_frames_gives_the_clip_that_decoding_all_gives(shapes, tmp_path, count, frames):
    """decode_clip converts only the frames it keeps and stops after the last: the same clip, faster."""
    import av as pyav
    rng = np.random.default_rng(count)
    path = tmp_path / "clip.mp4"
    shapes.write_mp4(path, rng.integers(0, 256, (count, 32, 32, 3)).astype(np.uint8))
    every = video._decode_all_then_choose(pyav, path, frames, (16, 16))
    assert np.array_equal(video.decode_clip(path, frames, (16, 16)), np.stack(every, axis=1))
