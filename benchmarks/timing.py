"""What every benchmark shares: a timer that rests before each round, summaries and ratios, the BLAS in use,
and the PyTorch side (its networks and its training step), when PyTorch is installed.

Every figure is reported as the minimum, median and maximum over repeated rounds;
a ratio between two libraries is taken round by round, each round timing both
sides back to back, so that the machine's noise hits both alike. Timings are
never asserted anywhere.
"""
from __future__ import annotations

import os
import statistics
import time

try:
    import torch
except ImportError:  # PyTorch is never a dependency of tinyflux; without it we measure tinyflux alone
    torch = None


def summary(times_s: list[float]) -> dict:
    ms = [t * 1e3 for t in times_s]
    return {"min": min(ms), "median": statistics.median(ms), "max": max(ms)}


def summary_ratio(ours: list[float], theirs: list[float]) -> dict:
    """Ratios of paired rounds (round i of tinyflux over round i of PyTorch), and of the medians."""
    pairs = [a / b for a, b in zip(ours, theirs)]
    return {"min": min(pairs), "median": statistics.median(pairs), "max": max(pairs),
            "of_medians": statistics.median(ours) / statistics.median(theirs)}


def format_ms(s: dict) -> str:
    return f"{s['min']:7.2f} {s['median']:7.2f} {s['max']:7.2f}"


class Timer:
    """Times one call, waiting for the GPU where there is one, after a pause where one is asked for.

    Why the pause on the CPU: after its last matrix product, each OpenBLAS worker thread keeps
    spinning for a while before it goes to sleep (PyTorch's threads too, for less long). Timed back
    to back, the side that follows would lose a core to the other's spinning threads for most of
    its round. The default pause is longer than OpenBLAS's spin, as measured in the README's
    CPU section.
    """

    def __init__(self, sync, pause_s: float = 0.0):
        self.sync = sync
        self.pause_s = pause_s

    def __call__(self, fn, inner: int = 1) -> float:
        self.sync()
        if self.pause_s:
            time.sleep(self.pause_s)
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        self.sync()
        return (time.perf_counter() - start) / inner


def timed_steps(step, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step``, after 3 calls of warm-up (allocations, threads, messages)."""
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (pip install threadpoolctl): BLAS kernel unknown"
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    return "; ".join(f"{p['internal_api']} {p.get('version')} kernel={p.get('architecture')} "
                     f"threads={p['num_threads']}" for p in pools) or "no BLAS pool found"


def blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info
        pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
        return pools[0]["num_threads"] if pools else os.cpu_count()
    except ImportError:
        return os.cpu_count()


def torch_convnet(device, dims: int = 2, widths=(16, 32, 32), features: int = 288, classes: int = 10,
                  in_channels: int = 1):
    """The tinyflux networks of tinyflux.models in PyTorch: three 3x3(x3) convolutions with ReLU and 2x pooling,
    then a dense layer (2-D: the MNIST model; 3-D with widths 8, 16, 32: the video model)."""
    conv, pool = (torch.nn.Conv2d, torch.nn.MaxPool2d) if dims == 2 else (torch.nn.Conv3d, torch.nn.MaxPool3d)
    layers, channels = [], in_channels
    for width in widths:
        layers += [conv(channels, width, 3, padding=1), torch.nn.ReLU(), pool(2)]
        channels = width
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(features, classes)).to(device)


def torch_mnist_model(device):
    return torch_convnet(device)


def torch_video_model(device):
    return torch_convnet(device, dims=3, widths=(8, 16, 32), features=1024, classes=80)


def torch_colour_video_model(device):
    """The video model for colour clips (3x16x32x32) and 4 classes, as on a user's own clips."""
    return torch_convnet(device, dims=3, widths=(8, 16, 32), features=1024, classes=4, in_channels=3)


def torch_bn_video_model(device):
    """tf.models.video_bn_net in PyTorch (benchmarks/torch_video_compare.py), 3 colour channels, 4 classes."""
    from torch_video_compare import bn_net
    return bn_net(4).to(device)


def torch_training_step(model, opt, x, y):
    """PyTorch's forward, loss, backward and Adam on (x, y), as one call."""

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step
