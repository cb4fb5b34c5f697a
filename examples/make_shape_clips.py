"""Write a small video data set of real files: coloured shapes moving in one of four directions.

    python examples/make_shape_clips.py DIR               # 320 training and 80 test clips, mp4
    python examples/make_shape_clips.py DIR --as-frames   # the same clips as folders of PNG frames

It lays the clips out as video data sets do, DIR/<split>/<class>/<clip>.mp4,
for ``tinyflux.data.video_folder`` and ``examples/video_conv.py --video-dir
DIR``. Each clip shows one square or disc of a random colour and size on a
dark, noisy background, moving 1 to 3 pixels per frame to the left, right,
up or down. The class is the direction, so no single frame tells it: the
model has to compare frames, as it would to tell one skateboard trick from
another. The files are encoded with FFmpeg (through PyAV, ``pip install
'tinyflux[video]'``) as MPEG-4 Part 2 video, which every FFmpeg build can
write, so they go through a real encoder and decoder, with their losses.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# (rows, columns) per frame; rows grow downwards, as in an image
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def draw_clip(rng: np.random.Generator, direction: str, frames: int, height: int,
              width: int) -> np.ndarray:
    """uint8 (frames, height, width, 3): one shape moving in ``direction``, RGB."""
    side = int(rng.integers(height // 6, height // 3 + 1))  # of the square, or the disc's diameter
    room = min(height, width) - side  # how far the shape can travel and stay whole
    speed = int(rng.integers(1, max(1, min(3, room // (frames - 1))) + 1))  # pixels per frame
    step = np.array(DIRECTIONS[direction]) * speed  # (2,): rows and columns per frame
    span = step * (frames - 1)  # (2,): the whole way from the first frame to the last
    low = np.maximum(0, -span)  # the top-left starts that keep the shape inside until the end
    high = np.maximum(low, np.array([height, width]) - side - np.maximum(0, span))
    start = rng.integers(low, high + 1)  # (2,)
    colour = rng.integers(80, 256, 3).astype(np.uint8)
    disc = rng.random() < 0.5
    rows, cols = np.mgrid[0:side, 0:side]
    centre = (side - 1) / 2
    inside_disc = (rows - centre) ** 2 + (cols - centre) ** 2 <= (side / 2) ** 2
    mask = inside_disc if disc else np.ones((side, side), bool)
    # a dark, noisy background
    video = rng.integers(0, 40, (frames, height, width, 3)).astype(np.uint8)
    for t in range(frames):
        top, left = np.clip(start + step * t, 0, [height - side, width - side])
        patch = video[t, top:top + side, left:left + side]  # (side, side, 3) view
        patch[mask] = colour
    return video


def write_mp4(path: Path, video: np.ndarray, fps: int = 10) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as an MPEG-4 file with FFmpeg."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.options = {"qscale": "2"}  # high quality: the motion must survive compression
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the frames the encoder still holds
            container.mux(packet)


def write_frames(folder: Path, video: np.ndarray) -> None:
    """uint8 (T, H, W, 3) as PNG files 0000.png, 0001.png, ... in ``folder``."""
    import av
    folder.mkdir(parents=True, exist_ok=True)
    for t, image in enumerate(video):
        with av.open(str(folder / f"{t:04d}.png"), "w") as container:
            stream = container.add_stream("png")
            stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def make_set(root, train: int = 320, test: int = 80, frames: int = 16, height: int = 48,
             width: int = 48, as_frames: bool = False, seed: int = 0) -> Path:
    """Write ``train`` and ``test`` clips, spread
    evenly over the four directions, under ``root``."""
    root = Path(root)
    # never overwrite someone's clips that happen to carry the same names
    for split in ("train", "test"):
        if (root / split).exists() and any((root / split).iterdir()):
            raise FileExistsError(f"{root / split} already holds files: write "
                                  "the set into a new folder")
    rng = np.random.default_rng(seed)
    names = list(DIRECTIONS)
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            direction = names[i % len(names)]
            video = draw_clip(rng, direction, frames, height, width)
            target = root / split / direction / f"clip{i:04d}"
            if as_frames:
                write_frames(target, video)
            else:
                write_mp4(target.with_suffix(".mp4"), video)
    return root


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to write DIR/<split>/<class>/<clip> into")
    parser.add_argument("--train", type=int, default=320, help="training clips")
    parser.add_argument("--test", type=int, default=80, help="test clips")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--size", type=int, default=48, help="frame height and width in pixels")
    parser.add_argument("--as-frames", action="store_true",
                        help="write folders of PNG frames instead of mp4")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random shapes and motions")
    options = parser.parse_args(argv)
    if options.train < 0 or options.test < 0 or options.frames < 2 or options.size < 8:
        parser.error("need --train, --test >= 0, --frames >= 2 and --size >= 8")
    return options


if __name__ == "__main__":
    options = parse_args()
    make_set(options.root, options.train, options.test, options.frames, options.size, options.size,
             options.as_frames, options.seed)
    print(f"wrote {options.train} training and {options.test} test clips under {options.root}")
