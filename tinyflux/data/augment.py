"""Clip augmentation: every training batch a little
different, so that a small set of clips goes further.

A few hundred clips are few: a network soon knows each by heart. Showing each
clip differently every epoch, in ways that do not change its class, makes
the network learn what the classes have in common instead. For video:

- **where**: a random spatial crop of a clip decoded a little larger than
  the network's input (a camera held a bit to the side);
- **when**: a random first frame among a few more frames than the network
  takes, decoded at the same rate as the evaluation view's, so that motion
  keeps its speed. A random stride (``max_stride=2``: every frame or every
  second one, a trick done a little faster) is there to ask for, only
  where speed tells no class apart: it makes slow motion look fast;
- **light**: brightness and contrast changed by a random factor per clip;
- **mirror**: a horizontal flip, only when the user says his classes do not
  depend on left and right (off by default: a flip turns "left" into "right").

:class:`ClipAugment` does all four on a float batch (B, C, T, H, W) in [0, 1],
on the device the batch is on, with the generator the training loop passes
(``tf.train.RandomStream``: seeded and resumable). ``decoded()`` says at how
many frames and pixels to decode clips for it, and ``center(x)`` gives the
evaluation view of clips decoded so: the central crop, and the middle frames
at the largest stride, where the training views are on average.
``saved()`` and ``from_saved`` keep the view with a model, so that
predictions see clips as training did.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from ..backends import get_array_module


@dataclass
class ClipAugment:
    """Turns clips (B, C, T0, H0, W0) into (B, C,
    frames, height, width), differently for every clip.

    Args:
        frames, height, width: what the network takes.
        max_stride: the largest frame stride drawn (1: consecutive frames only, the speed of motion
            kept).
        jitter: brightness and contrast move by a factor in [1 - jitter, 1 + jitter].
        flip: mirror half of the clips left to right.
        spare: frames decoded beyond ``max_stride * frames``, as a fraction of ``frames``: room for
            the first frame to move.
        margin: pixels decoded beyond the view, as a fraction of its height and width.
    """

    frames: int
    height: int
    width: int
    max_stride: int = 1
    jitter: float = 0.2
    flip: bool = False
    spare: float = 0.25
    margin: float = 0.15

    def decoded(self) -> tuple[int, int, int]:
        """(frames, height, width) to decode clips at, so that views can move in time and space."""
        return (self.max_stride * self.frames + int(self.spare * self.frames),
                decoded_size(self.height, self.margin), decoded_size(self.width, self.margin))

    def saved(self) -> str:
        """The settings as JSON text, to keep with a model
        (checkpoint metadata holds strings, not dicts)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_saved(cls, saved, frames: int, height: int, width: int) -> "ClipAugment":
        """The view a model was trained with: ``saved()``'s text; or
        ``True``, from a tinyflux that kept no settings with its models,
        whose views were decoded at twice the frames with strides 1 or 2."""
        if saved is True:
            return cls(frames, height, width, max_stride=2, spare=0.0)
        try:
            settings = json.loads(saved)
            return cls(**settings)
        except (TypeError, ValueError) as error:
            raise ValueError("ClipAugment.from_saved: expected the text of ClipAugment.saved() "
                             f"or True, got {saved!r} ({error})") from None

    def __call__(self, x, rng):
        xp = get_array_module(x)
        batch, _, available, tall, wide = x.shape
        out = []
        for clip in x:  # (C, T0, H0, W0): one random view each
            stride = int(rng.integers(1, self._largest_stride(available) + 1))
            first = int(rng.integers(0, available - (self.frames - 1) * stride))
            top = int(rng.integers(0, tall - self.height + 1))
            left = int(rng.integers(0, wide - self.width + 1))
            view = clip[:, first:first + (self.frames - 1) * stride + 1:stride,
                        top:top + self.height, left:left + self.width]
            if self.flip and float(rng.random()) < 0.5:
                view = view[..., ::-1]
            out.append(view)
        clips = xp.stack(out)  # B views (C, frames, height, width) -> (B, C, frames, height, width)
        if self.jitter:
            shape = (batch, 1, 1, 1, 1)  # one factor per clip
            contrast = xp.asarray(rng.uniform(1 - self.jitter, 1 + self.jitter, batch),
                                  dtype=x.dtype).reshape(shape)
            brightness = xp.asarray(rng.uniform(-self.jitter / 2, self.jitter / 2, batch),
                                    dtype=x.dtype).reshape(shape)
            mean = clips.mean(axis=(1, 2, 3, 4), keepdims=True)
            clips = xp.clip((clips - mean) * contrast + mean + brightness, 0, 1)
        return xp.ascontiguousarray(clips)

    def _largest_stride(self, available: int) -> int:
        if available < self.frames:
            raise ValueError(f"ClipAugment: clips of {available} frames, fewer than "
                             f"the {self.frames} asked for")
        return max(1, min(self.max_stride, (available - 1) // max(self.frames - 1, 1)))

    def center(self, clips):
        """The evaluation view of uint8 or float clips (N, C, T0, H0,
        W0): the central crop, the middle frames at the largest stride."""
        _, _, available, tall, wide = clips.shape
        stride = self._largest_stride(available)
        span = (self.frames - 1) * stride + 1  # frames from the view's first to its last
        first = (available - span) // 2
        top, left = (tall - self.height) // 2, (wide - self.width) // 2
        view = clips[:, :, first:first + span:stride, top:top + self.height, left:left + self.width]
        return get_array_module(clips).ascontiguousarray(view)


def decoded_size(size: int, margin: float = 0.15) -> int:
    """The side to decode training clips at, so that
    a random crop of ``size`` can move: 32 -> 37."""
    return int(np.ceil(size * (1 + margin)))
