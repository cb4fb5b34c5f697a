"""How the cost of a training step grows: MNIST at batch 32, 128 and 512 and the 3-D video model, beside PyTorch.

Run through ``python benchmarks/conv_bench.py --sweep``.
"""
from __future__ import annotations

import statistics

import numpy as np

import tinyflux as tf
from tinyflux import optim
from tinyflux.models import mnist_convnet as mnist_model
from timing import (format_ms, summary, summary_ratio, torch, torch_bn_video_model, torch_colour_video_model,
                    torch_mnist_model, torch_training_step, torch_video_model)

SWEEP = [  # (name, batch, tinyflux model, PyTorch model, one example's shape, classes)
    ("MNIST", 32, mnist_model, torch_mnist_model, (1, 28, 28), 10),
    ("MNIST", 128, mnist_model, torch_mnist_model, (1, 28, 28), 10),
    ("MNIST", 512, mnist_model, torch_mnist_model, (1, 28, 28), 10),
    ("video", 32, tf.models.video_convnet, torch_video_model, (1, 16, 32, 32), 80),
    # the 3-D model on colour clips with 4 classes, at the small batches own clips train with
    ("video3", 8, lambda: tf.models.video_convnet(3, 4), torch_colour_video_model, (3, 16, 32, 32), 4),
    ("video3", 32, lambda: tf.models.video_convnet(3, 4), torch_colour_video_model, (3, 16, 32, 32), 4),
]

# The model own clips train with (examples/video_conv.py --video-dir: tf.models.video_bn_net) at the clip size
# of a phone video kept small (16 frames of 112x112, colour), batch 8 and 32, 4 classes.
OWN_CLIPS = [("bn-clips", batch, lambda: tf.models.video_bn_net(3, 4), torch_bn_video_model, (3, 16, 112, 112), 4)
             for batch in (8, 32)]


def measure_sweep(xp, timer, rounds, steps_per_round, use_torch, torch_device, sweep=None) -> list:
    """The training step (forward, backward, Adam) of each model and batch in SWEEP, tinyflux and PyTorch
    interleaved round by round, each going first every other round: images per second and per-round
    ratios, to see how the cost grows."""
    results = []
    for name, batch, build, torch_build, shape, classes in sweep or SWEEP:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, (batch, *shape)).astype(np.float32)
        labels = rng.integers(0, classes, batch)
        tf.seed(0)
        model = build() if xp is np else tf.gpu(build())
        x, y = xp.asarray(images), xp.asarray(labels)
        tf_step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=1e-3))
        steps = [("tinyflux", lambda: tf_step(x, y))]
        if use_torch:
            torch.manual_seed(0)
            tmodel = torch_build(torch_device)
            tx, ty = torch.tensor(images, device=torch_device), torch.tensor(labels, device=torch_device)
            steps.append(("torch", torch_training_step(tmodel, torch.optim.Adam(tmodel.parameters(), lr=1e-3),
                                                       tx, ty)))
        times = {side: [] for side, _ in steps}
        for _ in range(2):  # warm up
            for _, step in steps:
                step()
        for i in range(rounds):
            for side, step in (steps if i % 2 == 0 else steps[::-1]):  # each side goes first every other round
                times[side].append(timer(step, steps_per_round))
        entry = {"model": name, "batch": batch, "tinyflux_ms": summary(times["tinyflux"]),
                 "tinyflux_images_per_s": batch / statistics.median(times["tinyflux"])}
        if use_torch:
            entry.update(torch_ms=summary(times["torch"]),
                         torch_images_per_s=batch / statistics.median(times["torch"]),
                         ratio=summary_ratio(times["tinyflux"], times["torch"]))
        results.append(entry)
    return results


def print_sweep(results: list) -> None:
    print("Training step (forward, backward, Adam) by model and batch; ms per step min / median / max:")
    for e in results:
        line = (f"  {e['model']:6} batch {e['batch']:3}: tinyflux {format_ms(e['tinyflux_ms'])} "
                f"{e['tinyflux_images_per_s']:7.0f} images/s")
        if "ratio" in e:
            r = e["ratio"]
            line += (f" | PyTorch {format_ms(e['torch_ms'])} {e['torch_images_per_s']:7.0f} images/s"
                     f" | ratio per round {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f}")
        print(line)
