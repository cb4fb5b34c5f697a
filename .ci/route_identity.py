"""A fingerprint of a few training runs, to show that a change of code left their arithmetic bit for bit as it was.

    PYTHONPATH=. python .ci/route_identity.py > after.txt          # in the working tree
    (cd old-checkout && PYTHONPATH=. python /path/to/.ci/route_identity.py) > before.txt
    diff before.txt after.txt

Each line is one run: the model, the CPU backend (NumPy's code, or Numba's kernels
where Numba is installed), the number of steps, and a SHA-256 of every loss and
every parameter after the last step, bytes as computed. Runs:

- MNIST: the model-zoo convnet, 100 Adam steps at batch 32 on the first 3,200
  MNIST training images (from the cache; the example downloads them);
- video: the 3-D convnet, 5 steps at batch 8 on moving-digit clips;
- own clips: ``video_bn_net`` (convolutions without pooling right after them,
  batch normalisation, dropout), 5 steps at batch 4 on random colour clips.

tinyflux is imported from ``PYTHONPATH`` (an editable install would otherwise win),
and the script refuses to run when that is not the current folder's, so it
fingerprints the checkout it is run in.
"""
import hashlib
import os
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]

import numpy as np  # noqa: E402

import tinyflux as tf  # noqa: E402
from tinyflux import optim  # noqa: E402
from tinyflux.data import datasets, moving_digits  # noqa: E402
from tinyflux.models import mnist_convnet, video_bn_net, video_convnet  # noqa: E402
from tinyflux.modes import modes  # noqa: E402


def fingerprint(model, batches, steps: int) -> str:
    """SHA-256 of the losses of ``steps`` Adam steps and of the parameters after them."""
    opt = optim.Adam(model.parameters(), lr=3e-3)
    digest = hashlib.sha256()
    for step in range(steps):
        x, y = batches(step)
        loss = tf.logit_cross_entropy(model(tf.Tensor(x)), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        digest.update(np.asarray(loss.data).tobytes())
    for name, parameter in model.named_parameters():
        digest.update(name.encode() + parameter.data.tobytes())
    return digest.hexdigest()


def runs():
    images, labels = datasets.load("mnist", "train")
    images = (images[:3200].astype(np.float32) / 255).reshape(-1, 1, 28, 28)  # (N, 28, 28) -> (N, 1, 28, 28)

    def mnist(step):
        return images[32 * step:32 * (step + 1)], labels[32 * step:32 * (step + 1)]

    clips, clip_labels = moving_digits.clips("train", 40)
    clips = (clips.astype(np.float32) / 255)[:, None]  # (N, T, H, W) -> (N, 1, T, H, W)

    def video(step):
        return clips[8 * step:8 * (step + 1)], clip_labels[8 * step:8 * (step + 1)]

    colour = np.random.default_rng(1).uniform(0, 1, (20, 3, 16, 32, 32)).astype(np.float32)
    colour_labels = np.arange(20) % 4

    def own(step):
        return colour[4 * step:4 * (step + 1)], colour_labels[4 * step:4 * (step + 1)]

    yield "mnist", mnist_convnet, mnist, 100
    yield "video", video_convnet, video, 5
    yield "own clips", video_bn_net, own, 5


def main():
    if not os.path.abspath(tf.__file__).startswith(os.getcwd() + os.sep):
        sys.exit(f"route_identity: tinyflux came from {tf.__file__}, not from {os.getcwd()}; run it with "
                 "PYTHONPATH=. in the checkout to fingerprint")
    for kernels in (False, True):
        modes.cpu_kernels = kernels
        backend = type(tf.backends.cpu_ops()).__name__
        for name, build, batches, steps in runs():
            tf.seed(0)
            model = build()
            model.train()
            print(f"{name:9} {backend:9} {steps:3} steps  {fingerprint(model, batches, steps)}", flush=True)


if __name__ == "__main__":
    main()
