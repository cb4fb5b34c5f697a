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
kept in the cache (``cache_dir("video-clips")``) as a .npz file holding the
clip and the SHA-256 of its bytes, under a key made of the clip's path, the
frames and size asked for, and the size and modification time of every file
the clip was read from: the second run decodes nothing, and a clip that
changes is decoded again. So is a cached clip that is damaged, empty or fails
its checksum: the cache can cost a decode, never give a wrong clip.

PyAV is an optional extra: ``pip install 'tinyflux[video]'`` (its wheels
carry FFmpeg, so nothing else needs installing).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np

from ..checks import as_tuple, integer
from ..files import (ChecksumError, checked_npz_bytes, read_checked_npz, remove_stale_parts,
                     write_bytes_atomically)
from .datasets import cache_dir
from .idx import DatasetError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# part of every cache key (2: .npz with a checksum); a change of decoding changes it
CACHE_FORMAT = 2
MISSING_AV = "reading video needs PyAV (FFmpeg for Python): pip install 'tinyflux[video]'"

log = logging.getLogger("tinyflux.data")


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


def find_clips(root, split: str,
               classes: list[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """The clips of ``root/split`` in a fixed order,
    their integer labels and the sorted class names.

    ``classes``, when given, is the list the split must have (the training
    split's, for a test split); otherwise a split other than "train" is
    compared with ``root/train`` when that exists.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder; expected the layout "
                           f"root/{split}/<class>/<clip>")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DatasetError(f"{folder}: no class folders; expected the layout "
                           f"root/{split}/<class>/<clip>")
    stray = sorted(p.name for p in folder.iterdir()
                   if not p.is_dir() and not p.name.startswith("."))
    if stray:
        raise DatasetError(f"{folder}: files where only class folders belong: {', '.join(stray)}")
    if classes is None and split != "train" and (Path(root) / "train").is_dir():
        classes = sorted(p.name for p in (Path(root) / "train").iterdir()
                         if p.is_dir() and not p.name.startswith("."))
    if classes is None and split == "train" and len(found) < 2:
        raise DatasetError(f"{folder}: one class folder ({found[0]}); telling classes "
                           "apart needs at least two")
    if classes is not None and found != list(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DatasetError(f"{folder}: its classes differ from the training split's: "
                           f"missing {missing or 'none'}, not in training {extra or 'none'}")
    paths, labels = [], []
    for label, name in enumerate(found):
        members = sorted(p for p in (folder / name).iterdir() if not p.name.startswith("."))
        if not members:
            raise DatasetError(f"{folder / name}: empty class folder (no "
                               "video files or frame folders)")
        for path in members:
            if not (path.is_dir() or is_video_file(path)):
                raise DatasetError(f"{path}: neither a video file ({', '.join(VIDEO_SUFFIXES)}) "
                                   f"nor a folder of frame images{_what_else(path)}")
            paths.append(path)
            labels.append(label)
    return paths, np.asarray(labels, dtype=np.int64), found


def is_video_file(path: Path) -> bool:
    """Whether ``path`` is a regular file named as a video
    (a pipe or a device named so would block the read)."""
    return path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()


def _what_else(path: Path) -> str:
    """Why a path named like a clip is none: a dangling link or a link loop, a pipe, a device."""
    if path.is_symlink() and not path.exists():
        return " (a link to nothing, or a loop of links)"
    if path.exists() and not (path.is_file() or path.is_dir()):
        return " (a pipe, socket or device, not a regular file)"
    return ""


def is_frame_folder(path: Path) -> bool:
    """Whether ``path`` is a clip given as a folder of
    frame images (and no video files or clip folders)."""
    if not path.is_dir():
        return False
    members = [p for p in path.iterdir() if not p.name.startswith(".")]
    return (any(p.suffix.lower() in FRAME_SUFFIXES for p in members) and
            not any(is_video_file(p) or p.is_dir() for p in members))


def clip_files(folder: Path) -> list[Path]:
    """The clips in ``folder``, in name order: its video files and its folders of frames.

    Other files (a ``cover.jpg`` beside the clips,
    notes) are left out with a warning naming them."""
    members = sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
    clips = [p for p in members if is_video_file(p) or is_frame_folder(p)]
    others = [p for p in members if p not in clips]
    if clips and others:
        listed = ", ".join(f"{p.name}{_what_else(p)}" for p in others)
        log.warning(f"{folder}: left out, not clips: {listed}")
    if not clips:
        raise DatasetError(f"{folder}: no clips in it (video files "
                           f"{', '.join(VIDEO_SUFFIXES)} or frame folders)")
    return clips


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
        raise DatasetError(f"{folder}: a clip folder without frame images "
                           f"({', '.join(FRAME_SUFFIXES)}); a clip needs at least one frame")
    return files


def _rgb(frame, size: tuple[int, int]) -> np.ndarray:
    """One decoded frame as uint8 (3, H, W), converted and resized by FFmpeg."""
    height, width = size
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()  # (H, W, 3)
    return rgb.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W): channels first, as nn.Conv takes them


def decode_clip(path, frames: int, size: tuple[int, int]) -> np.ndarray:
    """One clip (video file or frame folder) as uint8 (3,
    frames, H, W); DatasetError naming it if unreadable."""
    av = _av()
    path = Path(path)
    try:
        if path.is_dir():
            files = _frame_files(path)
            chosen = [_decode_frame(av, files[index],
                                    size) for index in even_positions(len(files), frames)]
        else:
            chosen = _decode_chosen(av, path, frames, size)
    except DatasetError:
        raise
    except (av.error.FFmpegError, StopIteration, OSError, ValueError) as error:
        if isinstance(error, PermissionError):  # PyAV's own PermissionError is one too
            raise DatasetError(f"{path}: permission denied: this user may not read it") from None
        raise DatasetError(f"{path}: FFmpeg cannot decode it, the file may be damaged or truncated "
                           f"({type(error).__name__}: {error})") from None
    return np.stack(chosen, axis=1)  # T arrays (3, H, W) -> (3, T, H, W)


@contextlib.contextmanager
def _opened(av, path: Path):
    """``av.open(path)``; a name that is not valid UTF-8, which FFmpeg
    cannot be given, is opened by Python and handed to FFmpeg as a file."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        with open(path, "rb") as file, av.open(file) as container:
            yield container
        return
    with av.open(str(path)) as container:
        yield container


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise DatasetError(f"{path}: FFmpeg finds no video stream in it: the file is damaged or "
                           "truncated, or holds no video (sound only?)")
    return container.streams.video[0]


def _decode_chosen(av, path: Path, frames: int, size: tuple[int, int]) -> list:
    """The ``frames`` evenly spaced frames of a video file, each converted to (3, H, W).

    Every frame must still be decoded (a compressed frame is mostly a difference from the ones
    before it), but only the chosen ones are converted and resized, decoding stops after the last of
    them, and FFmpeg decodes with several threads. Which frames to choose needs the count first: the
    video packets are counted without decoding them (reading the file, not decompressing it)."""
    with _opened(av, path) as container:
        count = sum(1 for packet in container.demux(_video_stream(container, path)) if packet.size)
    if not count:
        raise DatasetError(f"{path}: the video has no frames; a clip needs at least one")
    wanted = even_positions(count, frames)
    converted: dict[int, np.ndarray] = {}
    with _opened(av, path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame and slice threads, as the codec allows
        decoded = 0
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                converted[index] = _rgb(frame, size)
            if index >= wanted[-1]:
                break
    # fewer frames than packets (a damaged file): choose again
    if len(converted) < len(set(wanted.tolist())):
        if not decoded:
            raise DatasetError(f"{path}: the video has no frames; a clip needs at least one")
        return _decode_all_then_choose(av, path, frames, size)
    return [converted[i] for i in wanted]


def _decode_all_then_choose(av, path: Path, frames: int, size: tuple[int, int]) -> list:
    with _opened(av, path) as container:
        every = [_rgb(frame, size) for frame in container.decode(_video_stream(container, path))]
    if not every:
        raise DatasetError(f"{path}: the video has no frames; a clip needs at least one")
    return [every[i] for i in even_positions(len(every), frames)]


def _decode_frame(av, file: Path, size: tuple[int, int]) -> np.ndarray:
    """One frame image of a clip folder as uint8 (3, H, W);
    DatasetError naming the file if it is not an image."""
    try:
        with _opened(av, file) as image:
            return _rgb(next(image.decode(video=0)), size)
    except (av.error.FFmpegError, StopIteration, OSError, ValueError) as error:
        if isinstance(error, PermissionError):
            raise DatasetError(f"{file}: permission denied: this user may not read it") from None
        raise DatasetError(f"{file}: a frame of the clip {file.parent} that FFmpeg cannot read as "
                           f"an image ({type(error).__name__})") from None


def _read_cached(path: Path, shape: tuple) -> np.ndarray | None:
    """The clip cached in ``path`` if it is whole and its
    checksum matches; None otherwise (decode it again)."""
    try:
        clip = read_checked_npz(path, "clip")
    except FileNotFoundError:
        return None
    except ChecksumError:
        log.warning("%s: a cached clip that fails its checksum; decoding the clip again", path)
        return None
    except ValueError as error:
        log.warning("%s: a damaged cached clip (%s); decoding the clip again", path, error)
        return None
    if clip.shape != shape or clip.dtype != np.uint8:
        log.warning("%s: a cached clip of another shape or type; decoding the clip again", path)
        return None
    return clip


def _cache_bytes(clip: np.ndarray) -> bytes:
    return checked_npz_bytes("clip", clip)


def _check_fits_in_memory(count: int, frames: int, size: tuple[int, int], split: str) -> None:
    """Refuse, before decoding anything, clips that would not fit in this machine's memory."""
    needed = count * 3 * frames * size[0] * size[1]  # uint8 (N, 3, T, H, W)
    limit = memory_limit()
    if limit is None:  # not a POSIX system: no figure to compare with
        return
    total, what = limit
    if needed > total // 2:
        raise DatasetError(f"video_folder: the {count} {split} clips of {frames} frames of "
                           f"{size[0]}x{size[1]} would take {needed / 2**30:.1f} GiB as uint8 "
                           "(and four times that as float32 batches), more than half of the "
                           f"{total / 2**30:.1f} GiB {what}; fewer --frames or a smaller --size")


def memory_limit() -> tuple[int, str] | None:
    """(bytes, what they are) of the memory this process may use: the smallest of the machine's
    memory, the process's address-space limit (ulimit -v) and its control group's limit (a
    container's --memory); None where none of them can be read."""
    limits = []
    try:
        limits.append((os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                       "of this machine's memory"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append((soft, "this process may use (ulimit -v)"))
    except (ImportError, ValueError, OSError):
        pass
    # cgroup v2, v1
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        # v1 writes a huge number for "no limit", v2 writes "max"
        if text.isdigit() and int(text) < 2**60:
            limits.append((int(text), "its control group may use (a container's limit)"))
        break
    return min(limits, default=None)


def _cache_key(path: Path, frames: int, size: tuple[int, int]) -> str:
    sources = _frame_files(path) if path.is_dir() else [path]
    parts = [f"v{CACHE_FORMAT}", str(path.resolve()), f"{frames}x{size[0]}x{size[1]}"]
    for source in sources:
        stat = source.stat()
        parts.append(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns}")
    # any file name
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def video_folder(root, split: str, frames: int = 16, size=(64, 64),
                 classes: list[str] | None = None,
                 cache: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read every clip of ``root/split``: (clips uint8
    (N, 3, T, H, W), labels int64 (N,), class names).

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
    _check_fits_in_memory(len(paths), frames, size, split)
    folder = cache_dir("video-clips")
    if cache:
        remove_stale_parts(folder, ".npz")  # what runs killed while writing the cache left behind
    keys = [_cache_key(path, frames, size) for path in paths]
    clips = np.empty((len(paths), 3, frames, *size), dtype=np.uint8)  # (N, 3, T, H, W)
    todo = []
    for i, key in enumerate(keys):
        cached = _read_cached(folder / f"{key}.npz", clips.shape[1:]) if cache else None
        if cached is None:
            todo.append(i)
        else:
            clips[i] = cached
    if todo:
        from tqdm import tqdm
        for i in tqdm(todo, desc=f"decoding {split} clips", disable=not sys.stderr.isatty()):
            clips[i] = decode_clip(paths[i], frames, size)
            if cache:
                try:
                    write_bytes_atomically(folder / f"{keys[i]}.npz", _cache_bytes(clips[i]))
                # a cache that cannot be written costs decoding next time, nothing more
                except OSError:
                    cache = False
    return clips, labels, found
