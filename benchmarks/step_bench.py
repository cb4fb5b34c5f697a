"""The MNIST training step (forward, backward, Adam) at batch 128: tinyflux beside PyTorch, round by round.

On a GPU also: tinyflux with its own CUDA kernels off in the same rounds, the
step captured as a CUDA graph on both sides, and the peak GPU memory of one step.
Run through ``python benchmarks/conv_bench.py`` (the default report).
"""
from __future__ import annotations

import statistics

import numpy as np

import tinyflux as tf
from tinyflux import optim
from tinyflux.models import mnist_convnet as mnist_model
from timing import summary, summary_ratio, torch, torch_mnist_model, torch_training_step

def optional(make):
    """``make()``, or None and the error's one-line description when it fails: a report keeps its other figures."""
    try:
        return make(), None
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"


def mnist_steps(xp, use_torch, torch_device, batch):
    """The timed calls of one round, by name: tinyflux's step and the variants this machine can run."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    tf.seed(0)
    model = mnist_model() if xp is np else tf.gpu(mnist_model())
    x, y = xp.asarray(images), xp.asarray(labels)
    tf_step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
    steps, errors = {"tinyflux": lambda: tf_step(x, y)}, {}

    def without_kernels():  # the same model and step with CuPy's own operations instead of tinyflux's kernels
        previous, tf.modes.own_kernels = tf.modes.own_kernels, False
        try:
            tf_step(x, y)
        finally:
            tf.modes.own_kernels = previous

    if xp is not np:
        _, errors["tinyflux_without_kernels"] = optional(without_kernels)  # the first call, as a check
        if errors["tinyflux_without_kernels"] is None:
            steps["tinyflux_without_kernels"] = without_kernels
        steps["tinyflux_graphed"], errors["tinyflux_graphed"] = optional(lambda: tinyflux_captured_step(x, y))
        # the same capture with tinyflux's own GEMM instead of cuBLAS, as captures were before
        steps["tinyflux_graphed_own_gemm"], errors["tinyflux_graphed_own_gemm"] = optional(
            lambda: tinyflux_captured_step(x, y, cublas=False))
    if use_torch:
        torch.manual_seed(0)
        tmodel = torch_mnist_model(torch_device)
        steps["torch"] = torch_training_step(tmodel, torch.optim.Adam(tmodel.parameters(), lr=3e-3),
                                             torch.tensor(images, device=torch_device),
                                             torch.tensor(labels, device=torch_device))
        if torch_device == "cuda":
            steps["torch_graphed"], errors["torch_graphed"] = optional(lambda: torch_graphed_step(images, labels))
    return {name: step for name, step in steps.items() if step is not None}, \
        {name: error for name, error in errors.items() if error}


def measure_training_step(xp, timer, rounds, steps_per_round, use_torch, torch_device, batch=128):
    """Every variant in the same rounds, one after the other; per-round ratios against tinyflux's eager step."""
    steps, errors = mnist_steps(xp, use_torch, torch_device, batch)
    for _ in range(3):  # warm up
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(timer(step, steps_per_round))
    ours = times["tinyflux"]
    result = {"batch": batch, "tinyflux_ms": summary(ours), "tinyflux_images_per_s": batch / statistics.median(ours)}
    for name, ratio in (("torch", "ratio"), ("torch_graphed", "ratio_graphed"),
                        ("tinyflux_without_kernels", "ratio_kernels_on_off")):
        if name in times:
            result[f"{name}_ms"] = summary(times[name])
            result[ratio] = summary_ratio(ours, times[name])
    if "torch" in times:
        result["torch_images_per_s"] = batch / statistics.median(times["torch"])
    if "tinyflux_graphed" in times:
        result["tinyflux_graphed_ms"] = summary(times["tinyflux_graphed"])
        if "torch_graphed" in times:
            result["ratio_both_graphed"] = summary_ratio(times["tinyflux_graphed"], times["torch_graphed"])
        if "tinyflux_graphed_own_gemm" in times:
            result["tinyflux_graphed_own_gemm_ms"] = summary(times["tinyflux_graphed_own_gemm"])
            result["ratio_graphed_cublas_own_gemm"] = summary_ratio(times["tinyflux_graphed"],
                                                                    times["tinyflux_graphed_own_gemm"])
    result.update({f"{name}_error": error for name, error in errors.items()})
    if xp is not np:
        result["peak_gpu_memory_mb"] = measure_gpu_memory(xp, steps["tinyflux"], steps.get("torch"))
    return result


def measure_gpu_memory(cupy, tf_step, torch_step=None) -> dict:
    """Peak GPU memory in use during one training step, in MB: tinyflux (CuPy's memory pool, counted by a
    memory hook from the bytes already in use) and PyTorch (its caching allocator's own peak)."""
    result = {}
    try:
        class PeakInUse(cupy.cuda.MemoryHook):
            name = "tinyflux_peak_in_use"

            def __init__(self, in_use: int):
                self.in_use = self.peak = in_use

            def malloc_postprocess(self, **kwargs):
                self.in_use += kwargs["mem_size"]
                self.peak = max(self.peak, self.in_use)

            def free_postprocess(self, **kwargs):
                self.in_use -= kwargs["mem_size"]

        cupy.cuda.Device().synchronize()
        hook = PeakInUse(cupy.get_default_memory_pool().used_bytes())
        with hook:
            tf_step()
            cupy.cuda.Device().synchronize()
        result["tinyflux"] = hook.peak / 1e6
    except Exception as error:  # report it and keep the other figures
        result["tinyflux_error"] = f"{type(error).__name__}: {error}"
    if torch_step is not None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        torch_step()
        torch.cuda.synchronize()
        result["torch"] = torch.cuda.max_memory_allocated() / 1e6
    return result


def tinyflux_captured_step(x, y, cublas=True):
    """The same tinyflux step recorded with tf.capture, on its own model copy; returns one replay. With
    ``cublas`` the graph's matrix products are cuBLAS's; the replay raises if they could not be."""
    tf.seed(0)
    model = tf.gpu(mnist_model())
    step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3), x, y,
                      cublas=cublas)
    if step.cublas != cublas:
        raise RuntimeError("tf.capture could not record cuBLAS's products (see the log)")
    return lambda: step(x, y)


def torch_graphed_step(images, labels):
    """PyTorch's whole MNIST step (forward, backward, Adam) captured once as a CUDA graph; returns its replay.

    The pattern of PyTorch's CUDA-graph documentation: static input tensors, a
    few warm-up steps on a side stream, then capture; Adam needs
    ``capturable=True`` so that its step counter lives on the GPU. This is the
    reference for a captured tinyflux step, measured on its own model copy.
    """
    torch.manual_seed(0)
    model = torch_mnist_model("cuda")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, capturable=True)
    static_x = torch.tensor(images, device="cuda")
    static_y = torch.tensor(labels, device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(static_x), static_y).backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        torch.nn.functional.cross_entropy(model(static_x), static_y).backward()
        opt.step()
    # A graph holds raw addresses, not references: the model, the optimizer's state and the static
    # inputs must outlive this function, or their memory is reused while the graph still reads it
    # (freed, the labels would be overwritten and the loss kernel's range assertion would fire).
    keep_alive = (model, opt, static_x, static_y)

    def replay():
        graph.replay()
        return keep_alive
    return replay
