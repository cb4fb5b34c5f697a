"""Folders of video clips -> uint8 arrays (N, 3, T, H, W), decoded by FFmpeg through PyAV.

The layout video data sets use (UCF101, Kinetics, your own skateboard clips):

    root/train/ollie/clip001.mp4
    root/train/ollie/clip002/          a clip as a folder of frame images: 0001.png, 0002.png, ...
    root/train/kickflip/...
    root/test/ollie/...

A clip is a video file FFmpeg reads (.mp4, .avi, .mkv, .webm, .mov) or a
folder of frame images (.png, .jpg, .jpeg, .bmp), taken in name order. The
class names are the folder names, sorted; a label is a class's position
in that list. Names starting with a dot are ignored; anything else that is
not a clip is an error, as is an empty class folder: nothing is skipped
silently.

Every clip becomes T frames of H x W pixels in RGB. The T frames are spread
evenly over the clip: of n decoded frames, the ones at positions
round(linspace(0, n - 1, T)), so a 3-second clip and a 10-second clip both
give T frames from start to end (a clip shorter than T frames repeats some).
Each chosen frame is converted and resized by FFmpeg itself (its swscale
library, through PyAV's ``VideoFrame.reformat``), not by hand-written NumPy.

Decoding is slow next to training on small clips, so each decoded clip is
kept in the cache (``cache_dir("video-clips")``) as a .npy file, under a key
made of the clip's path, the frames and size asked for, and the size and
modification time of every file the clip was read from: the second epoch
and the second run decode nothing, and a clip that changes is decoded again.

PyAV is an optional extra: ``pip install 'tinyflux[video]'`` (its wheels
carry FFmpeg, so nothing else needs installing).
"""
from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

from ..checks import as_tuple, integer
from ..files import write_bytes_atomically
from .datasets import cache_dir
from .idx import DatasetError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CACHE_FORMAT = 1  # part of every cache key: change it when decoding changes, so old files are not reused
MISSING_AV = "reading video needs PyAV (FFmpeg for Python): pip install 'tinyflux[video]'"


def _av():
    try:
        import av
    except ImportError:
        raise ImportError(MISSING_AV) from None
    return av


def available() -> bool:
    """Whether PyAV can be imported, i.e. whether video files can be read here."""
    try:
        _av()
    except ImportError:
        return False
    return True


def find_clips(root, split: str, classes: list[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """The clips of ``root/split`` in a fixed order, their integer labels and the sorted class names.

    ``classes``, when given, is the list the split must have (the training
    split's, for a test split); otherwise a split other than "train" is
    compared with ``root/train`` when that exists.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder; expected the layout root/{split}/<class>/<clip>")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DatasetError(f"{folder}: no class folders; expected the layout root/{split}/<class>/<clip>")
    stray = sorted(p.name for p in folder.iterdir() if not p.is_dir() and not p.name.startswith("."))
    if stray:
        raise DatasetError(f"{folder}: files where only class folders belong: {', '.join(stray)}")
    if classes is None and split != "train" and (Path(root) / "train").is_dir():
        classes = sorted(p.name for p in (Path(root) / "train").iterdir()
                         if p.is_dir() and not p.name.startswith("."))
    if classes is not None and found != list(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DatasetError(f"{folder}: its classes differ from the training split's: "
                           f"missing {missing or 'none'}, not in training {extra or 'none'}")
    paths, labels = [], []
    for label, name in enumerate(found):
        members = sorted(p for p in (folder / name).iterdir() if not p.name.startswith("."))
        if not members:
            raise DatasetError(f"{folder / name}: empty class folder (no video files or frame folders)")
        for path in members:
            if not (path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES):
                raise DatasetError(f"{path}: neither a video file ({', '.join(VIDEO_SUFFIXES)}) "
                                   "nor a folder of frame images")
            paths.append(path)
            labels.append(label)
    return paths, np.asarray(labels, dtype=np.int64), found


def even_positions(count: int, frames: int) -> np.ndarray:
    """Which of ``count`` frames to keep so that ``frames`` of them span the clip evenly.

    >>> even_positions(10, 4).tolist()
    [0, 3, 6, 9]
    >>> even_positions(2, 4).tolist()     # a short clip repeats frames
    [0, 0, 1, 1]
    """
    return np.linspace(0, count - 1, frames).round().astype(np.int64)


def _frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder}: a clip folder without frame images ({', '.join(FRAME_SUFFIXES)}); "
                           "a clip needs at least one frame")
    return files


def _rgb(frame, size: tuple[int, int]) -> np.ndarray:
    """One decoded frame as uint8 (3, H, W), converted and resized by FFmpeg."""
    height, width = size
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()  # (H, W, 3)
    return rgb.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W): channels first, as nn.Conv takes them


def decode_clip(path, frames: int, size: tuple[int, int]) -> np.ndarray:
    """One clip (video file or frame folder) as uint8 (3, frames, H, W); DatasetError naming it if unreadable."""
    av = _av()
    path = Path(path)
    try:
        if path.is_dir():
            files = _frame_files(path)
            chosen = []
            for index in even_positions(len(files), frames):
                with av.open(str(files[index])) as image:
                    chosen.append(_rgb(next(image.decode(video=0)), size))
        else:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DatasetError(f"{path}: no video stream in the file")
                decoded = [_rgb(frame, size) for frame in container.decode(video=0)]
            if not decoded:
                raise DatasetError(f"{path}: the video has no frames; a clip needs at least one")
            chosen = [decoded[i] for i in even_positions(len(decoded), frames)]
    except DatasetError:
        raise
    except (av.error.FFmpegError, StopIteration, OSError, ValueError) as error:
        raise DatasetError(f"{path}: FFmpeg cannot decode it ({type(error).__name__}: {error})") from None
    return np.stack(chosen, axis=1)  # T arrays (3, H, W) -> (3, T, H, W)


def _cache_key(path: Path, frames: int, size: tuple[int, int]) -> str:
    sources = _frame_files(path) if path.is_dir() else [path]
    parts = [f"v{CACHE_FORMAT}", str(path.resolve()), f"{frames}x{size[0]}x{size[1]}"]
    for source in sources:
        stat = source.stat()
        parts.append(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def video_folder(root, split: str, frames: int = 16, size=(64, 64), classes: list[str] | None = None,
                 cache: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read every clip of ``root/split``: (clips uint8 (N, 3, T, H, W), labels int64 (N,), class names).

    Args:
        root: the data set's folder, holding ``<split>/<class>/<clip>``.
        split: "train", "test", or any other folder name under root.
        frames: T, frames kept per clip, spread evenly over it.
        size: (H, W) of the frames, or one number for square frames.
        classes: the class names this split must have; by default the
            training split's (see :func:`find_clips`).
        cache: keep decoded clips in ``cache_dir("video-clips")`` and reuse them.
    """
    frames = integer(frames, "video_folder frames", minimum=1)
    size = as_tuple(size, 2, "video_folder size (H, W)", minimum=1)
    paths, labels, found = find_clips(root, split, classes)
    _av()  # fail with the install command before anything else
    folder = cache_dir("video-clips")
    keys = [_cache_key(path, frames, size) for path in paths]
    clips = np.empty((len(paths), 3, frames, *size), dtype=np.uint8)  # (N, 3, T, H, W)
    todo = []
    for i, key in enumerate(keys):
        cached = folder / f"{key}.npy"
        if cache and cached.is_file():
            try:
                clips[i] = np.load(cached)
                continue
            except (OSError, ValueError):  # damaged or of another shape: decode again
                pass
        todo.append(i)
    if todo:
        from tqdm import tqdm
        for i in tqdm(todo, desc=f"decoding {split} clips", disable=not sys.stderr.isatty()):
            clips[i] = decode_clip(paths[i], frames, size)
            if cache:
                buffer = io.BytesIO()
                np.save(buffer, clips[i])
                try:
                    write_bytes_atomically(folder / f"{keys[i]}.npy", buffer.getvalue())
                except OSError:  # a cache that cannot be written costs decoding next time, nothing more
                    cache = False
    return clips, labels, found
