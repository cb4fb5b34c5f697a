"""Pretrained networks, frozen, under a small trained
head: features per frame or per clip, computed once.

For a small video data set, a network trained on millions of images or clips already knows edges,
textures, objects and movements; only a small head on its features is trained. The network is
frozen: it has no parameters as far as the optimizer and the checkpoints are concerned, and runs
without a graph, in evaluation mode.

- ``FrameFeatures(image_model)`` runs an image network (B, C, H, W) -> (B, F, ...) on every frame.
  ``over_time="mean"`` averages the frames' features, (N, F): what is seen, whatever the order,
  which cannot tell left from right or a trick from the same trick played backwards.
  ``over_time="keep"`` keeps them in order, (N, F, T, ...), time after the features as a
  channel-first layer wants it: a ``Conv((3,), F, ...)`` over time on top sees what changes from
  frame to frame, and a ``Conv((3, 3, 3), ...)`` on feature maps (B, F, h, w) also where.
- ``ClipFeatures(video_model)`` runs a 3-D network (B, C, T, H, W) -> (B, F, ...) on whole clips,
  as torchvision's r3d_18, mc3_18 and r2plus1d_18 (imported with ``tf.onnx.load``): it sees motion.

A frozen network gives a clip the same features every epoch, so they are computed once: each clip's
features are kept, in memory and on disk in ``cache_dir("features")``, under the SHA-256 of the
network's weights and structure, the normalisation and the clip's values, as .npz files that carry
the SHA-256 of the features (a damaged or changed file is computed again, never used). Training the
head then costs a look-up per clip instead of the network's forward pass. ``cache=False`` turns it
off (for clips that differ every epoch, as augmented ones do, the cache would only grow)."""
from __future__ import annotations

import hashlib
import logging

import numpy as np

from ..backends import get_array_module, to_cpu_array
from ..files import (ChecksumError, checked_npz_bytes, read_checked_npz, remove_stale_parts,
                     write_bytes_atomically)
from ..modes import no_grad
from ..tensor import Tensor, as_tensor
from .module import Module

log = logging.getLogger("tinyflux.nn")


def network_digest(model) -> str:
    """SHA-256 of a network's structure and every array it computes with (an onnx.Graph's too)."""
    digest = hashlib.sha256(repr(model).encode())
    # an imported onnx.Graph
    arrays = dict(getattr(model, "params", {}), **getattr(model, "constants", {}))
    if hasattr(model, "nodes"):
        digest.update(repr(model.nodes).encode())
    arrays.update(model.named_parameters())
    arrays.update(model.named_buffers())
    for name in sorted(arrays):
        array = arrays[name]
        array = to_cpu_array(array.data if isinstance(array, Tensor) else array)
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class _Frozen(Module):
    """A frozen network and its feature cache; subclasses say how clips become its inputs."""

    def __init__(self, model, mean=None, std=None, cache: bool = True):
        self.model = model.eval()  # frozen: its batch norms use their statistics, no dropout
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.cache = cache
        self._memory: dict[str, np.ndarray] = {}
        # whether leftovers of killed writes were removed from the cache folder
        self._cleaned = False
        self._digest = None

    def named_parameters(self, prefix: str = ""):
        return iter(())  # frozen: nothing for the optimizer or the checkpoints

    def named_buffers(self, prefix: str = ""):
        return iter(())

    def children(self) -> list:
        return []  # model.train() does not reach the frozen network

    def normalised(self, x, channel_axis_shape: tuple):
        if self.mean is None:
            return x
        xp = get_array_module(x)
        mean = xp.asarray(self.mean.reshape(channel_axis_shape))
        return (x - mean) / xp.asarray(self.std.reshape(channel_axis_shape))

    def compute(self, clips):  # (N, C, T, H, W) -> features (N, ...)
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        clips = as_tensor(x).data
        if clips.ndim != 5:
            raise ValueError(f"{self.signature()}: expected clips (N, C, T, H, W), got "
                             f"shape {tuple(clips.shape)}")
        if not self.cache:
            return Tensor(self.compute(clips))
        xp = get_array_module(clips)
        self._digest = self._digest or (network_digest(self.model)
                                        + repr((self.mean, self.std, self.signature())))
        keys = [hashlib.sha256((self._digest + str(clip.dtype) + str(clip.shape)).encode()
                               + np.ascontiguousarray(to_cpu_array(clip)).tobytes()).hexdigest()
                for clip in clips]
        missing = [i for i, key in enumerate(keys)
                   if key not in self._memory and not self._from_disk(key)]
        if missing:
            computed = to_cpu_array(self.compute(clips[missing]))
            for i, features in zip(missing, computed):
                self._memory[keys[i]] = features
                self._to_disk(keys[i], features)
        return Tensor(xp.asarray(np.stack([self._memory[key] for key in keys])))

    def _path(self, key: str):
        from ..data import cache_dir  # here: tinyflux.data imports nn
        return cache_dir("features") / f"{key}.npz"

    def _from_disk(self, key: str) -> bool:
        path = self._path(key)
        try:
            self._memory[key] = read_checked_npz(path, "features")
        except FileNotFoundError:
            return False
        except ChecksumError:
            log.warning("%s: cached features that fail their checksum; computing them again", path)
            return False
        except ValueError as error:
            log.warning("%s: damaged cached features (%s); computing them again", path, error)
            return False
        return True

    def _to_disk(self, key: str, features: np.ndarray) -> None:
        # once per object: what runs killed while writing the cache left behind
        if not self._cleaned:
            remove_stale_parts(self._path(key).parent, ".npz")
            self._cleaned = True
        write_bytes_atomically(self._path(key), checked_npz_bytes("features", features))


class FrameFeatures(_Frozen):
    """FrameFeatures(image_model, mean=None, std=None, *, over_time="mean",
    cache=True): a frozen image network on every frame of clips (N, C, T,
    H, W): (N, F) averaged over time, or (N, F, T, ...) kept in order.

    ``mean`` and ``std`` (one number per colour) normalise the frames first, as the network was
    trained (ImageNet: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).
    """

    def __init__(self, image_model, mean=None, std=None, *, over_time: str = "mean",
                 cache: bool = True):
        if over_time not in ("mean", "keep"):
            raise ValueError("FrameFeatures: over_time must be 'mean' or "
                             f"'keep', got {over_time!r}")
        super().__init__(image_model, mean, std, cache)
        self.over_time = over_time

    @property
    def image_model(self):
        return self.model

    def signature(self) -> str:
        kept = ", in order" if self.over_time == "keep" else ""
        return f"FrameFeatures({type(self.model).__name__}, frozen{kept})"

    def compute(self, clips):
        n, c, t, h, w = clips.shape
        # (N, C, T, H, W) -> (N T, C, H, W)
        frames = clips.transpose(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
        with no_grad():
            # (N T, F, ...)
            features = self.model(Tensor(self.normalised(frames, (1, -1, 1, 1)))).data
        features = features.reshape(n, t, *features.shape[1:])  # (N T, F, ...) -> (N, T, F, ...)
        if self.over_time == "mean":
            return features.mean(axis=1).reshape(n, -1)  # (N, T, F) -> (N, F)
        return features.swapaxes(1, 2)  # (N, T, F, ...) -> (N, F, T, ...): time is a spatial axis


class ClipFeatures(_Frozen):
    """ClipFeatures(video_model, mean=None, std=None, *, cache=True): a frozen 3-D network on whole
    clips, (N, C, T, H, W) -> its output (N, F, ...).

    ``mean`` and ``std`` normalise each colour first (torchvision's Kinetics networks: mean
    (0.43216, 0.394666, 0.37645), std (0.22803, 0.22145, 0.216989)).
    """

    def signature(self) -> str:
        return f"ClipFeatures({type(self.model).__name__}, frozen)"

    def compute(self, clips):
        with no_grad():
            return self.model(Tensor(self.normalised(clips, (1, -1, 1, 1, 1)))).data


__all__ = ["ClipFeatures", "FrameFeatures", "network_digest"]
