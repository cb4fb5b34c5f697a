"""The set the diagnosis ran on: a 4-8 pixel square, 1 pixel a frame, left, right, up or down, of a random colour
darker or brighter than a noisy background of random tint (0-255 per colour). 50 training and 15 test clips per
class, 48x48, 20 frames, mp4. It is examples/make_motion_clips.py's "direction" set with one speed.

    python docs/results/motion/make_hard_direction_set.py DIR
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


shapes, motion = load("make_shape_clips"), load("make_motion_clips")


def clip(rng, direction, frames=20, size=48):
    tint = rng.uniform(0, 255, 3)
    video = tint + rng.normal(0, 12, (frames, size, size, 3))
    side = int(rng.integers(4, 9))
    while True:
        colour = rng.uniform(0, 255, 3)
        if abs(colour.mean() - tint.mean()) > 40:
            break
    path = motion.square_path(rng, np.array(motion.DIRECTIONS[direction]), frames, size, size, side)
    motion.paint_square(video, path, side, colour)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


if __name__ == "__main__":
    root, rng = Path(sys.argv[1]), np.random.default_rng(5)
    for split, count in (("train", 50), ("test", 15)):
        for i in range(count):
            for direction in motion.DIRECTIONS:
                shapes.write_mp4(root / split / direction / f"clip{i:04d}.mp4", clip(rng, direction))
