"""Write small video sets where motion is the only cue:
direction, speed, rotation, a moving background, uneven lengths.

    python examples/make_motion_clips.py DIR --kind direction   # 200 training, 60 test clips, mp4
    python examples/make_motion_clips.py DIR --kind all         # every kind, in DIR/<kind>/

A skateboard trick is a motion: no single frame tells a kickflip from a heelflip. These sets
check that a video model learns motion itself, with no shortcut: every frame of every class
has the same kind of background, object and colours, and only the way things change from
frame to frame tells the classes apart.

- ``direction``: a small square drifts left, right, up or down over a noisy background of random
  tint, dark or bright; the square is darker or brighter than it, of a random colour;
- ``speed``: a square drifts in a random direction, ``slow`` (1 pixel a frame) or ``fast`` (2);
- ``rotation``: a bar turns about the centre,
  ``clockwise`` or ``anticlockwise``, from a random angle;
- ``background``: the ``direction`` square over a textured background that pans in its own
  random direction, so that the class is how the object moves, not how everything moves;
- ``uneven``: the ``direction`` task with clips from 10 to 40 frames long.

Every set has 200 training and 60 test clips in all, whatever its number of classes (50 and 15 per
class for the four directions, 100 and 30 for two speeds), 48x48, 20 frames. Each is written as
DIR/<split>/<class>/<clip>.mp4 (or folders of PNG frames with
``--as-frames``), the layout ``examples/video_conv.py --video-dir`` reads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from make_shape_clips import write_frames, write_mp4

# (rows, columns) per frame
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
KINDS = ("direction", "speed", "rotation", "background", "uneven")
CLASSES = {"direction": list(DIRECTIONS), "speed": ["slow", "fast"],
           "rotation": ["anticlockwise", "clockwise"], "background": list(DIRECTIONS),
           "uneven": list(DIRECTIONS)}
SPEEDS = {"slow": 1, "fast": 2}  # pixels per frame


def noisy_background(rng, frames: int, height: int, width: int) -> np.ndarray:
    """float (frames, height, width, 3): a random tint,
    dark to bright, with fresh noise in every frame."""
    return rng.uniform(0, 255, 3) + rng.normal(0, 12, (frames, height, width, 3))


def contrasting_colour(rng, background: np.ndarray) -> np.ndarray:
    """(3,): a random colour, darker or brighter than
    ``background`` but at least 40 grey levels away from it."""
    grey = background.mean()
    while True:
        colour = rng.uniform(0, 255, 3)
        if abs(colour.mean() - grey) > 40:
            return colour


def paint_square(video: np.ndarray, corners: np.ndarray, side: int, colour: np.ndarray) -> None:
    """Paint a square of ``side`` pixels with its
    top-left corner at ``corners[t]`` into each frame t."""
    height, width = video.shape[1:3]
    for t, (top, left) in enumerate(corners):
        top, left = int(np.clip(top, 0, height - side)), int(np.clip(left, 0, width - side))
        video[t, top:top + side, left:left + side] = colour


def square_path(rng, step: np.ndarray, frames: int, height: int, width: int,
                side: int) -> np.ndarray:
    """int (frames, 2): top-left corners of a square moving
    ``step`` pixels a frame, whole in view throughout."""
    span = step * (frames - 1)  # (2,): the whole way, rows and columns
    low = np.maximum(0, -span)
    high = np.maximum(low, np.array([height, width]) - side - np.maximum(0, span))
    start = rng.integers(low, high + 1)  # (2,)
    return start + np.outer(np.arange(frames), step)  # (frames, 1) * (1, 2) -> (frames, 2)


def drifting_square(rng, direction: str, frames: int, height: int, width: int, background=None,
                    speed: int | None = None) -> np.ndarray:
    side = int(rng.integers(height // 12, height // 6 + 1))  # 4 to 8 pixels in 48
    if speed is None:  # as fast as the clip's length leaves room for: 1 or 2 pixels a frame
        speed = int(rng.integers(1, max(1, min(2, (height - side) // (frames - 1))) + 1))
    video = noisy_background(rng, frames, height, width) if background is None else background
    paint_square(video,
                 square_path(rng, np.array(DIRECTIONS[direction]) * speed, frames, height, width,
                             side), side, contrasting_colour(rng, video))
    return video


def rotating_bar(rng, turn: str, frames: int, height: int, width: int) -> np.ndarray:
    video = noisy_background(rng, frames, height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    rows, cols = rows - (height - 1) / 2, cols - (width - 1) / 2  # about the centre
    start, rate = rng.uniform(0, np.pi), rng.uniform(0.08, 0.16)  # radians, radians a frame
    sign = -1.0 if turn == "clockwise" else 1.0  # angles grow anticlockwise with rows pointing up
    length, colour = rng.uniform(0.3, 0.45) * min(height, width), contrasting_colour(rng, video)
    for t in range(frames):
        angle = start + sign * rate * t
        along = cols * np.cos(angle) - rows * np.sin(angle)  # -rows: image rows grow downwards
        across = cols * np.sin(angle) + rows * np.cos(angle)
        video[t][(np.abs(across) <= 1.5) & (np.abs(along) <= length)] = colour
    return video


def panning_texture(rng, frames: int, height: int, width: int) -> np.ndarray:
    """float (frames, height, width, 3): a blotchy texture
    of random tint shifting 1 pixel a frame one way."""
    coarse = rng.uniform(-40, 40, ((height + frames) // 4 + 2, (width + frames) // 4 + 2, 1))
    # 4x4 blotches
    texture = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1) + rng.uniform(20, 110, 3)
    rows, cols = DIRECTIONS[list(DIRECTIONS)[int(rng.integers(4))]]
    top0, left0 = (frames if rows < 0 else 0), (frames if cols < 0 else 0)
    tops = [top0 + rows * t for t in range(frames)]  # where each frame's view starts
    lefts = [left0 + cols * t for t in range(frames)]
    return np.stack([texture[tops[t]:tops[t] + height, lefts[t]:lefts[t] + width]
                     for t in range(frames)]) + rng.normal(0, 8, (frames, height, width, 3))


def draw_clip(rng, kind: str, name: str, frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (frames, height, width, 3), RGB: one clip of class ``name`` of the set ``kind``."""
    if kind in ("direction", "uneven"):
        video = drifting_square(rng, name, frames, height, width)
    elif kind == "speed":
        direction = list(DIRECTIONS)[int(rng.integers(4))]
        video = drifting_square(rng, direction, frames, height, width, speed=SPEEDS[name])
    elif kind == "rotation":
        video = rotating_bar(rng, name, frames, height, width)
    elif kind == "background":
        video = drifting_square(rng, name, frames, height, width,
                                panning_texture(rng, frames, height, width), speed=2)
    else:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}; got {kind!r}")
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def make_set(root, kind: str, train: int = 200, test: int = 60, frames: int = 20, size: int = 48,
             as_frames: bool = False, seed: int = 0) -> Path:
    """Write ``train`` and ``test`` clips of the set
    ``kind`` under ``root``, spread evenly over its classes."""
    root = Path(root)
    # never overwrite someone's clips that happen to carry the same names
    for split in ("train", "test"):
        if (root / split).exists() and any((root / split).iterdir()):
            raise FileExistsError(f"{root / split} already holds files: write "
                                  "the set into a new folder")
    rng = np.random.default_rng(seed)
    names = CLASSES[kind]
    for split, count in (("train", train), ("test", test)):
        for i in range(-(-count // len(names))):  # a clip of every class in turn, count in all
            for name in names[:count - i * len(names)]:
                length = int(rng.integers(10, 41)) if kind == "uneven" else frames
                video = draw_clip(rng, kind, name, length, size, size)
                target = root / split / name / f"clip{i:04d}"
                write_frames(target,
                             video) if as_frames else write_mp4(target.with_suffix(".mp4"), video)
    return root


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root",
                        help="folder to write DIR/<split>/<class>/<clip> into (with "
                             "--kind all: DIR/<kind>/)")
    parser.add_argument("--kind", default="direction", choices=[*KINDS, "all"],
                        help="which motion tells the classes")
    parser.add_argument("--train", type=int, default=200,
                        help="training clips in all, spread over the classes")
    parser.add_argument("--test", type=int, default=60,
                        help="test clips in all, spread over the classes")
    parser.add_argument("--frames", type=int, default=20,
                        help="frames per clip (uneven: 10 to 40 whatever this is)")
    parser.add_argument("--size", type=int, default=48, help="frame height and width in pixels")
    parser.add_argument("--as-frames", action="store_true",
                        help="write folders of PNG frames instead of mp4")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random clips")
    options = parser.parse_args(argv)
    if options.train < 4 or options.test < 4 or options.frames < 8 or options.size < 24:
        parser.error("need --train, --test >= 4 (a clip of every class), "
                     "--frames >= 8 and --size >= 24")
    return options


if __name__ == "__main__":
    options = parse_args()
    for kind in KINDS if options.kind == "all" else (options.kind,):
        folder = Path(options.root) / kind if options.kind == "all" else Path(options.root)
        make_set(folder, kind, options.train, options.test, options.frames, options.size,
                 options.as_frames, options.seed)
        print(f"wrote {options.train} training and {options.test} test clips "
              f"of {kind} under {folder}")
