"""Benchmark tinyflux's convolutions and the MNIST training step, side by side with PyTorch.

    python benchmarks/conv_bench.py                       # table, CPU (NumPy)
    python benchmarks/conv_bench.py --json                # the same figures as JSON
    python benchmarks/conv_bench.py --shape 64,16,32,32 --kernel 3 --out 32
    python benchmarks/conv_bench.py --backend cupy        # on a CUDA GPU
    python benchmarks/conv_bench.py --distributed --rounds 7 --steps 20   # 2 MPI ranks against 1 process
    python benchmarks/conv_bench.py --sweep --rounds 7 --steps 3   # batch 32, 128, 512 and the video model

What it measures, all in one process so that the machine's noise hits both sides alike:

* sgemm: the GFLOP/s of one large float32 matrix product, the ceiling for im2col convolutions;
* per convolution layer: forward, backward to the input, backward to the weights;
  time, GFLOP/s (2*N*O*P*C*prod(K) each) and the fraction of the sgemm rate;
* the full MNIST training step at batch 128 (forward, backward, Adam).

When PyTorch is importable it runs the same work with the same thread count, interleaved
round by round with tinyflux, and reports the ratio tinyflux / PyTorch. Every figure is
the minimum, median and maximum over repeated rounds. On the CPU each round starts after a
short rest (``--pause``), so that neither side's idle BLAS threads spin on a core the other
needs (see ``Timer``). Timings are never asserted anywhere.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import tinyflux as tf
from tinyflux import backend, optim
from tinyflux.backends import ops_for
from tinyflux.functional.convolution import ConvFunction, output_size
from tinyflux.models import mnist_convnet as mnist_model

try:
    import torch
except ImportError:  # PyTorch is never a dependency of tinyflux; without it we measure tinyflux alone
    torch = None

MNIST_LAYERS = [  # (name, N, C, H, W, K, O) of the three convolutions at batch 128
    ("conv1", 128, 1, 28, 28, 3, 16),
    ("conv2", 128, 16, 14, 14, 3, 32),
    ("conv3", 128, 32, 7, 7, 3, 32),
]


def summary(times_s: list[float]) -> dict:
    ms = [t * 1e3 for t in times_s]
    return {"min": min(ms), "median": statistics.median(ms), "max": max(ms)}


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


def torch_convnet(device, dims: int = 2, widths=(16, 32, 32), features: int = 288, classes: int = 10):
    """The tinyflux networks of tinyflux.models in PyTorch: three 3x3(x3) convolutions with ReLU and 2x pooling,
    then a dense layer (2-D: the MNIST model; 3-D with widths 8, 16, 32: the video model)."""
    conv, pool = (torch.nn.Conv2d, torch.nn.MaxPool2d) if dims == 2 else (torch.nn.Conv3d, torch.nn.MaxPool3d)
    layers, channels = [], 1
    for width in widths:
        layers += [conv(channels, width, 3, padding=1), torch.nn.ReLU(), pool(2)]
        channels = width
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(features, classes)).to(device)


def torch_mnist_model(device):
    return torch_convnet(device)


def measure_sgemm(xp, timer, rounds: int, size: int = 2048) -> dict:
    a = xp.asarray(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32))
    b = xp.asarray(np.random.default_rng(1).standard_normal((size, size), dtype=np.float32))
    timer(lambda: a @ b)  # warm up
    times = [timer(lambda: a @ b) for _ in range(rounds)]
    flop = 2 * size ** 3
    return {"size": size, "time_ms": summary(times), "gflops": flop / min(times) / 1e9,
            "gflops_median": flop / statistics.median(times) / 1e9}


LAYER_CALLS = 5  # calls per timed round of one layer part: a round of one short call would mostly time
# how fast the cores wake up after the pause


def measure_layer(xp, timer, layer, rounds, use_torch, torch_device):
    name, n, c, h, w_, k, o = layer
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((n, c, h, w_), dtype=np.float32))
    w = xp.asarray(rng.standard_normal((o, c, k, k), dtype=np.float32))
    b = xp.asarray(np.zeros(o, dtype=np.float32))
    pad = k // 2
    oh, ow = output_size(h, k, 1, pad), output_size(w_, k, 1, pad)
    flop = 2 * n * o * oh * ow * c * k * k
    gy = xp.asarray(rng.standard_normal((n, o, oh, ow), dtype=np.float32))

    def tf_forward():
        fn = ConvFunction((1, 1), (pad, pad))
        fn.forward(x, w, b)
        return fn

    saved = tf_forward()
    tf_parts = {
        "forward": tf_forward,
        "backward_input": lambda: saved.backward(gy, [True, False, False]),
        "backward_weight": lambda: saved.backward(gy, [False, True, True]),
    }
    torch_parts = {}
    if use_torch:
        tx = torch.tensor(backend.to_cpu_array(x), device=torch_device)
        tw = torch.tensor(backend.to_cpu_array(w), device=torch_device)
        tb = torch.tensor(backend.to_cpu_array(b), device=torch_device)
        tgy = torch.tensor(backend.to_cpu_array(gy), device=torch_device)

        def torch_backward(mask):
            return torch.ops.aten.convolution_backward(tgy, tx, tw, [o], [1, 1], [pad, pad], [1, 1], False,
                                                       [0, 0], 1, mask)

        with torch.no_grad():
            torch_parts = {
                "forward": lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=pad),
                "backward_input": lambda: torch_backward([True, False, False]),
                "backward_weight": lambda: torch_backward([False, True, True]),
            }
    result = {"layer": name, "shape": [n, c, h, w_], "kernel": k, "out": o, "gflop": flop / 1e9}
    for part, fn in tf_parts.items():
        fn()  # warm up
        if part in torch_parts:
            torch_parts[part]()
        tf_times, torch_times = [], []
        for _ in range(rounds):  # interleaved: LAYER_CALLS tinyflux calls, then as many PyTorch calls
            tf_times.append(timer(fn, LAYER_CALLS))
            if part in torch_parts:
                torch_times.append(timer(torch_parts[part], LAYER_CALLS))
        entry = {"tinyflux_ms": summary(tf_times), "tinyflux_gflops": flop / statistics.median(tf_times) / 1e9}
        if torch_times:
            entry["torch_ms"] = summary(torch_times)
            entry["torch_gflops"] = flop / statistics.median(torch_times) / 1e9
            entry["ratio"] = summary_ratio(tf_times, torch_times)
        result[part] = entry
    return result


def summary_ratio(ours: list[float], theirs: list[float]) -> dict:
    """Ratios of paired rounds (round i of tinyflux over round i of PyTorch), and of the medians."""
    pairs = [a / b for a, b in zip(ours, theirs)]
    return {"min": min(pairs), "median": statistics.median(pairs), "max": max(pairs),
            "of_medians": statistics.median(ours) / statistics.median(theirs)}


def torch_video_model(device):
    return torch_convnet(device, dims=3, widths=(8, 16, 32), features=1024, classes=80)


SWEEP = [  # (name, batch, tinyflux model, PyTorch model, one example's shape, classes)
    ("MNIST", 32, mnist_model, "torch_mnist_model", (1, 28, 28), 10),
    ("MNIST", 128, mnist_model, "torch_mnist_model", (1, 28, 28), 10),
    ("MNIST", 512, mnist_model, "torch_mnist_model", (1, 28, 28), 10),
    ("video", 32, tf.models.video_convnet, "torch_video_model", (1, 16, 32, 32), 80),
]


def measure_sweep(xp, timer, rounds, steps_per_round, use_torch, torch_device) -> list:
    """The training step (forward, backward, Adam) of each model and batch in SWEEP, tinyflux and PyTorch
    interleaved round by round: images per second and per-round ratios, to see how the cost grows."""
    results = []
    for name, batch, build, torch_build, shape, classes in SWEEP:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, (batch, *shape)).astype(np.float32)
        labels = rng.integers(0, classes, batch)
        tf.seed(0)
        model = build() if xp is np else tf.gpu(build())
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x, y = xp.asarray(images), xp.asarray(labels)

        def tf_step():
            tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()
            opt.step()
            opt.zero_grad()

        steps = [("tinyflux", tf_step)]
        if use_torch:
            torch.manual_seed(0)
            tmodel = globals()[torch_build](torch_device)
            topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
            tx, ty = torch.tensor(images, device=torch_device), torch.tensor(labels, device=torch_device)

            def torch_step():
                loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
                topt.zero_grad(set_to_none=True)
                loss.backward()
                topt.step()
            steps.append(("torch", torch_step))
        times = {side: [] for side, _ in steps}
        for _ in range(2):  # warm up
            for _, step in steps:
                step()
        for _ in range(rounds):
            for side, step in steps:
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
        line = (f"  {e['model']:5} batch {e['batch']:3}: tinyflux {format_ms(e['tinyflux_ms'])} "
                f"{e['tinyflux_images_per_s']:7.0f} images/s")
        if "ratio" in e:
            r = e["ratio"]
            line += (f" | PyTorch {format_ms(e['torch_ms'])} {e['torch_images_per_s']:7.0f} images/s"
                     f" | ratio per round {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f}")
        print(line)


def measure_training_step(xp, timer, rounds, steps_per_round, use_torch, torch_device, batch=128):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    tf.seed(0)
    model = mnist_model()
    if xp is not np:
        model = tf.gpu(model)
    x, y = xp.asarray(images), xp.asarray(labels)
    opt = optim.Adam(model.parameters(), lr=3e-3)

    def tf_step():
        loss = tf.logit_cross_entropy(model(tf.Tensor(x)), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    if use_torch:
        torch.manual_seed(0)
        tmodel = torch_mnist_model(torch_device)
        topt = torch.optim.Adam(tmodel.parameters(), lr=3e-3)
        tx = torch.tensor(images, device=torch_device)
        ty = torch.tensor(labels, device=torch_device)

        def torch_step():
            loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
            topt.zero_grad(set_to_none=True)
            loss.backward()
            topt.step()

    def tf_step_without_kernels():  # the same model and step with CuPy's own operations instead of tinyflux's kernels
        previous, tf.modes.own_kernels = tf.modes.own_kernels, False
        try:
            tf_step()
        finally:
            tf.modes.own_kernels = previous

    captured_step, capture_error = None, None
    if xp is not np:
        try:
            captured_step = tinyflux_captured_step(x, y)
        except Exception as error:  # report it and keep the other figures
            capture_error = f"{type(error).__name__}: {error}"
    graphed_step, graph_error = None, None
    if use_torch and torch_device == "cuda":
        try:
            graphed_step = torch_graphed_step(images, labels)
        except Exception as error:  # report it and keep the other figures
            graph_error = f"{type(error).__name__}: {error}"

    without_kernels, without_kernels_error = xp is not np, None
    for _ in range(3):  # warm up both
        tf_step()
        if without_kernels:
            try:
                tf_step_without_kernels()
            except Exception as error:  # report it and keep the other figures
                without_kernels, without_kernels_error = False, f"{type(error).__name__}: {error}"
        if use_torch:
            torch_step()
    tf_times, torch_times, graphed_times, captured_times, plain_times = [], [], [], [], []
    for _ in range(rounds):
        tf_times.append(timer(tf_step, steps_per_round))
        if without_kernels:  # the kernels on/off comparison, in the same rounds
            plain_times.append(timer(tf_step_without_kernels, steps_per_round))
        if captured_step is not None:
            captured_times.append(timer(captured_step, steps_per_round))
        if use_torch:
            torch_times.append(timer(torch_step, steps_per_round))
        if graphed_step is not None:
            graphed_times.append(timer(graphed_step, steps_per_round))
    result = {"batch": batch, "tinyflux_ms": summary(tf_times),
              "tinyflux_images_per_s": batch / statistics.median(tf_times)}
    if use_torch:
        result["torch_ms"] = summary(torch_times)
        result["torch_images_per_s"] = batch / statistics.median(torch_times)
        result["ratio"] = summary_ratio(tf_times, torch_times)
    if graphed_times:
        result["torch_graphed_ms"] = summary(graphed_times)
        result["ratio_graphed"] = summary_ratio(tf_times, graphed_times)
    if graph_error:
        result["torch_graphed_error"] = graph_error
    if plain_times:
        result["tinyflux_without_kernels_ms"] = summary(plain_times)
        result["ratio_kernels_on_off"] = summary_ratio(tf_times, plain_times)
    if without_kernels_error:
        result["tinyflux_without_kernels_error"] = without_kernels_error
    if xp is not np:
        result["peak_gpu_memory_mb"] = measure_gpu_memory(xp, tf_step, torch_step if use_torch else None)
    if captured_times:
        result["tinyflux_graphed_ms"] = summary(captured_times)
        if graphed_times:
            result["ratio_both_graphed"] = summary_ratio(captured_times, graphed_times)
    if capture_error:
        result["tinyflux_graphed_error"] = capture_error
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


def measure_adam(xp, timer, rounds, steps_per_round=20) -> dict:
    """Adam's update of the MNIST model's 8 parameters: one update of the flat buffer (what optim.Adam
    does) against one update per parameter through the same function, alternated round by round."""
    tf.seed(0)
    model = mnist_model()
    if xp is not np:
        model = tf.gpu(model)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.grad = xp.asarray(rng.standard_normal(p.shape).astype(np.float32))
    ops, hyper = ops_for(opt.params[0].data), opt.flat_state()[3]

    def flat():
        opt.step()

    def per_parameter():
        ops.count_step(hyper)
        for p, m, v in zip(opt.params, opt.m, opt.v):
            ops.adam_update(p.data, p.grad, m, v, hyper)

    flat_times, per_parameter_times = [], []
    for _ in range(rounds):
        flat_times.append(timer(flat, steps_per_round))
        per_parameter_times.append(timer(per_parameter, steps_per_round))
    return {"flat_ms": summary(flat_times), "per_parameter_ms": summary(per_parameter_times),
            "ratio": summary_ratio(flat_times, per_parameter_times)}


def tinyflux_captured_step(x, y):
    """The same tinyflux step recorded with tf.capture, on its own model copy; returns one replay."""
    tf.seed(0)
    model = tf.gpu(mnist_model())
    step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3), x, y)
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


OPS_PROFILED = ("im2col", "col2im", "im2col_pooled", "col2im_pooled", "maxpool", "maxpool_backward", "maxpool_blocks",
                "maxpool_blocks_backward", "bias_relu", "relu_backward")  # and matmul, by shape


def profile_training_step(xp, timer, steps: int = 30, batch: int = 128) -> dict:
    """Where a tinyflux training step spends its time: wall time inside each Function's forward and backward,
    and inside the backend's hot operations (each matrix product by shape, with its GFLOP/s).

    Every Function subclass and the ops object's methods are wrapped with a timer for the duration of this
    measurement; the rest of the step (Python, the autograd loop) is reported as "other". On a GPU the
    parts are launch times (nothing waits for the GPU between them); only the step's total waits.
    """
    from tinyflux import tensor
    from tinyflux.functional import activations, basic, convolution, dense, losses

    totals: dict[str, float] = {}
    inside: dict[str, float] = {}  # the same for the ops object's methods
    flops: dict[str, int] = {}
    originals = []

    def wrap(cls, method, into=totals, key_of=None):
        original = cls.__dict__[method]
        originals.append((cls, method, original))

        def timed(self, *args):
            start = time.perf_counter()
            result = original(self, *args)
            key = key_of(args) if key_of else f"{cls.__name__}.{method}"
            into[key] = into.get(key, 0.0) + time.perf_counter() - start
            return result
        setattr(cls, method, timed)

    def matmul_key(args):
        (m, k), n = args[0].shape, args[1].shape[1]
        key = f"matmul ({m}x{k}) @ ({k}x{n})"
        flops[key] = 2 * m * k * n
        return key

    for module in (basic, activations, convolution, dense, losses):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, tensor.Function) and value is not tensor.Function:
                for method in ("forward", "backward"):
                    if method in value.__dict__:
                        wrap(value, method)
    wrap(optim.Adam, "step")
    ops_class = type(ops_for(xp.zeros(1, dtype=xp.float32)))
    for cls in ops_class.__mro__:  # each method where it is defined (CudaOps inherits some from NumpyOps)
        for method in OPS_PROFILED:
            if method in cls.__dict__ and getattr(ops_class, method) is cls.__dict__[method]:
                wrap(cls, method, inside, lambda args, method=method: method)
    matmul_owner = next(cls for cls in ops_class.__mro__ if "matmul" in cls.__dict__)
    wrap(matmul_owner, "matmul", inside, matmul_key)
    try:
        rng = np.random.default_rng(0)
        x = xp.asarray(rng.uniform(0, 1, (batch, 1, 28, 28)).astype(np.float32))
        y = xp.asarray(rng.integers(0, 10, batch))
        tf.seed(0)
        model = mnist_model() if xp is np else tf.gpu(mnist_model())
        opt = optim.Adam(model.parameters(), lr=3e-3)

        def step():
            tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()
            opt.step()
            opt.zero_grad()

        for _ in range(3):
            step()
        totals.clear()
        inside.clear()
        total = timer(step, steps)
    finally:
        for cls, method, original in reversed(originals):
            setattr(cls, method, original)
    parts = {key: value / steps * 1e3 for key, value in sorted(totals.items(), key=lambda kv: -kv[1])}
    parts["other (Python, autograd loop)"] = total * 1e3 - sum(parts.values())
    ops_ms = {key: value / steps * 1e3 for key, value in sorted(inside.items(), key=lambda kv: -kv[1])}
    gflops = {key: flops[key] / (ops_ms[key] * 1e-3) / 1e9 for key in flops}
    return {"step_ms": total * 1e3, "parts_ms": parts, "ops_ms": ops_ms, "matmul_gflops": gflops}


def format_ms(s: dict) -> str:
    return f"{s['min']:7.2f} {s['median']:7.2f} {s['max']:7.2f}"


def print_table(report: dict) -> None:
    print(f"tinyflux {tf.__version__} on {report['backend']}; {report['machine']}")
    print(f"BLAS: {report['blas']}")
    print(f"PyTorch: {report['torch']}")
    g = report["sgemm"]
    print(f"sgemm {g['size']}x{g['size']}: {g['gflops']:.1f} GFLOP/s at best, {g['gflops_median']:.1f} median\n")
    has_torch = report["torch"].startswith("PyTorch ")
    header = f"{'layer':6} {'part':16} {'tinyflux ms (min med max)':>26} {'GFLOP/s':>8} {'of sgemm':>8}"
    if has_torch:
        header += f" {'PyTorch ms (min med max)':>26} {'ratio tf/pt (min med max)':>26}"
    print(header)
    for layer in report["layers"]:
        for part in ("forward", "backward_input", "backward_weight"):
            e = layer[part]
            line = (f"{layer['layer']:6} {part:16} {format_ms(e['tinyflux_ms']):>26} {e['tinyflux_gflops']:8.1f} "
                    f"{e['tinyflux_gflops'] / report['sgemm']['gflops_median']:8.0%}")
            if "ratio" in e:
                r = e["ratio"]
                line += f" {format_ms(e['torch_ms']):>26} {r['min']:8.2f} {r['median']:8.2f} {r['max']:8.2f}"
            print(line)
    s = report.get("training_step")
    if s is None:
        return
    print(f"\nMNIST training step, batch {s['batch']} (forward, backward, Adam), ms per step (min median max):")
    print(f"  tinyflux {format_ms(s['tinyflux_ms'])}   {s['tinyflux_images_per_s']:8.0f} images/s")
    if "ratio" in s:
        r = s["ratio"]
        print(f"  PyTorch  {format_ms(s['torch_ms'])}   {s['torch_images_per_s']:8.0f} images/s")
        print(f"  ratio tinyflux/PyTorch per round: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}"
              f" (ratio of medians {r['of_medians']:.2f})")
    if "torch_graphed_ms" in s:
        r = s["ratio_graphed"]
        print(f"  PyTorch, whole step as one CUDA graph {format_ms(s['torch_graphed_ms'])}")
        print(f"  ratio tinyflux/graphed PyTorch per round: min {r['min']:.2f}, median {r['median']:.2f}, "
              f"max {r['max']:.2f}")
    if "torch_graphed_error" in s:
        print(f"  PyTorch CUDA graph: could not capture ({s['torch_graphed_error']})")
    if "tinyflux_graphed_ms" in s:
        print(f"  tinyflux, whole step as one CUDA graph (tf.capture) {format_ms(s['tinyflux_graphed_ms'])}")
    if "ratio_both_graphed" in s:
        r = s["ratio_both_graphed"]
        print(f"  ratio graphed tinyflux/graphed PyTorch per round: min {r['min']:.2f}, median {r['median']:.2f}, "
              f"max {r['max']:.2f}")
    if "tinyflux_graphed_error" in s:
        print(f"  tinyflux CUDA graph: could not capture ({s['tinyflux_graphed_error']})")
    if "tinyflux_without_kernels_ms" in s:
        r = s["ratio_kernels_on_off"]
        print(f"  tinyflux, eager with CuPy's operations instead of its kernels "
              f"{format_ms(s['tinyflux_without_kernels_ms'])}")
        print(f"  ratio kernels on/off per round: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}")
    if "tinyflux_without_kernels_error" in s:
        print(f"  tinyflux without its kernels: failed ({s['tinyflux_without_kernels_error']})")
    if "peak_gpu_memory_mb" in s:
        print(f"  peak GPU memory of one eager step, MB: {s['peak_gpu_memory_mb']}")
    a = report.get("adam")
    if a is not None:
        r = a["ratio"]
        def us(t):  # min median max in microseconds
            return " ".join(f"{t[key] * 1000:.1f}" for key in ("min", "median", "max"))
        print(f"\nAdam update of all 8 parameters, us (min median max): one flat buffer {us(a['flat_ms'])}, "
              f"one update per parameter {us(a['per_parameter_ms'])}")
        print(f"  ratio flat/per parameter per round: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}")


# -- data parallelism: 2 ranks x 1 BLAS thread against 1 process x 2 threads -------------------------------
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


def distributed_worker(steps: int, batch: int = 128) -> dict:
    """Time ``steps`` MNIST training steps at global batch ``batch``: as one process, or as this rank of an MPI
    job (started by --distributed) with a DataParallel Adam over this rank's slice. Rank 0 returns the times."""
    from tinyflux import distributed
    comm = distributed.init()
    tf.seed(0)
    model = mnist_model()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    if comm.size > 1:
        opt = distributed.DataParallel(opt, comm)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    part = distributed.shard(batch, comm)

    def step():
        tf.logit_cross_entropy(model(tf.Tensor(x[part])), y[part]).backward()
        if comm.size > 1:
            opt.step(examples=part.stop - part.start)
        else:
            opt.step()
        opt.zero_grad()

    times = timed_steps(step, steps)
    flat = np.zeros(sum(p.size for p in model.parameters()) + 1, np.float32)  # the gradients and the count
    allreduce = []
    for _ in range(50):
        start = time.perf_counter()
        comm.allreduce_sum(flat)
        allreduce.append(time.perf_counter() - start)
    return {"ranks": comm.size, "blas": blas_info(), "step_s": times, "allreduce_s": allreduce}


def torch_worker(steps: int, batch: int = 128) -> dict:
    """Time ``steps`` PyTorch MNIST training steps in this process (a launch of --distributed)."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    torch.manual_seed(0)
    model = torch_mnist_model("cpu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((batch, 1, 28, 28), dtype=np.float32))
    y = torch.tensor(rng.integers(0, 10, batch))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = timed_steps(step, steps)
    return {"blas": f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads", "step_s": times}


def measure_distributed(rounds: int, steps: int) -> dict:
    """Per round, one launch of each: ``mpiexec -n 2`` ranks of one BLAS thread, and one process of two
    threads; the order alternates. Each launch reports its mean step time; the ratio is taken per round."""
    import subprocess
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    script = os.path.abspath(__file__)
    worker = [sys.executable, "-m", "mpi4py", script, "--distributed-worker", "--steps", str(steps)]
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    two_threads = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    launches = {"2 ranks x 1 thread": ([mpiexec, "-n", "2", *worker], one_thread),
                "1 process x 2 threads": ([sys.executable, script, "--distributed-worker", "--steps", str(steps)],
                                          two_threads)}
    if torch is not None:  # PyTorch as a launch of its own too: the same step on the same 2 cores
        launches["PyTorch, 1 process x 2 threads"] = (
            [sys.executable, script, "--torch-worker", "--steps", str(steps)], two_threads)
    means = {name: [] for name in launches}
    reports = {}
    for r in range(rounds):  # the order of the launches alternates from round to round
        for name in (list(launches) if r % 2 == 0 else list(launches)[::-1]):
            command, env = launches[name]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            reports[name] = json.loads(done.stdout.strip().splitlines()[-1])
            means[name].append(statistics.mean(reports[name]["step_s"]))
    ours, theirs = means["2 ranks x 1 thread"], means["1 process x 2 threads"]
    ratios = {}
    if "PyTorch, 1 process x 2 threads" in means:
        pytorch = means["PyTorch, 1 process x 2 threads"]
        ratios = {"ratio_ranks_to_torch": summary_ratio(ours, pytorch),
                  "ratio_process_to_torch": summary_ratio(theirs, pytorch)}
    return {name: summary(values) for name, values in means.items()} | ratios | {
        "ratio": summary_ratio(ours, theirs),
        "allreduce_us": {k: v * 1e3 for k, v in summary(reports["2 ranks x 1 thread"]["allreduce_s"]).items()},
        "blas": {name: report["blas"] for name, report in reports.items()},
        "rounds": rounds, "steps": steps}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Convolution and MNIST training-step benchmark, with PyTorch beside it.")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy", help="array library for tinyflux")
    p.add_argument("--rounds", type=int, default=15, help="repetitions of each measurement")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    p.add_argument("--shape", help="extra layer: N,C,H,W of its input")
    p.add_argument("--kernel", type=int, default=3, help="kernel size of the extra layer")
    p.add_argument("--out", type=int, default=32, help="output channels of the extra layer")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    p.add_argument("--pause", type=float, default=0.15,
                   help="CPU only: seconds of rest before each timed round, so that the BLAS threads of the "
                        "previous round are asleep (see Timer)")
    p.add_argument("--skip-step", action="store_true", help="only the per-layer measurements")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--profile", action="store_true", help="only: time spent in each op of a tinyflux training step")
    p.add_argument("--sweep", action="store_true",
                   help="only: the training step at batch 32, 128 and 512, and the video model, beside PyTorch")
    p.add_argument("--distributed", action="store_true",
                   help="only: the MNIST step as 2 MPI ranks x 1 BLAS thread against 1 process x 2 threads, "
                        "and PyTorch's in a process of its own (needs pip install 'tinyflux[mpi]' mpich)")
    p.add_argument("--distributed-worker", action="store_true", help=argparse.SUPPRESS)  # one launch of the above
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)  # PyTorch's launch of the above
    args = p.parse_args(argv)
    if args.pause < 0:
        p.error(f"--pause must be 0 or more seconds, got {args.pause}")

    if args.torch_worker:
        result = torch_worker(args.steps)
        print(json.dumps(result))
        return result
    if args.distributed_worker:
        result = distributed_worker(args.steps)
        if tf.distributed.init().rank == 0:
            print(json.dumps(result))
        return result
    if args.distributed:
        result = measure_distributed(args.rounds, args.steps)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"MNIST training step, global batch 128, {result['rounds']} rounds of {result['steps']} steps "
                  "(mean per launch; min / median / max over rounds):")
            for name in ("2 ranks x 1 thread", "1 process x 2 threads", "PyTorch, 1 process x 2 threads"):
                if name in result:
                    print(f"  {name:32} {format_ms(result[name])}")
            for key, label in (("ratio", "2 ranks / 1 process"), ("ratio_ranks_to_torch", "2 ranks / PyTorch"),
                               ("ratio_process_to_torch", "1 process / PyTorch")):
                if key in result:
                    r = result[key]
                    print(f"  ratio {label}, per round: {r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f}")
            a = result["allreduce_us"]
            print(f"  allreduce of the 16,939 float32 (gradients and count), 2 ranks: "
                  f"{a['min']:.0f} / {a['median']:.0f} / {a['max']:.0f} us")
            for name, blas in result["blas"].items():
                print(f"  BLAS, {name}: {blas}")
        return result

    xp = backend.array_module(args.backend)  # raises a clear error when CuPy or the GPU is missing
    # on a GPU, wait for the whole device: PyTorch's work is queued on its own streams
    if args.backend == "cupy":
        timer = Timer(xp.cuda.Device().synchronize)
    else:
        timer = Timer(lambda: None, args.pause)
    use_torch = torch is not None and not args.no_torch
    torch_device = "cuda" if args.backend == "cupy" else "cpu"
    if use_torch and torch_device == "cuda" and not torch.cuda.is_available():
        use_torch = False
    threads = blas_threads()
    if use_torch:
        torch.set_num_threads(threads)
        torch_desc = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, device {torch_device}"
    elif torch is None:
        torch_desc = "not installed (pip install torch==2.13.0 for the CPU build): tinyflux figures only"
    else:
        torch_desc = "skipped"

    if args.sweep:
        results = measure_sweep(xp, timer, args.rounds, args.steps, use_torch, torch_device)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            print(f"{blas_info()}; PyTorch: {torch_desc}")
            print_sweep(results)
        return results

    if args.profile:
        sgemm = measure_sgemm(xp, timer, args.rounds)
        profile = profile_training_step(xp, timer)
        profile["sgemm_gflops"] = sgemm["gflops_median"]
        if args.json:
            print(json.dumps(profile, indent=2))
        else:
            step_ms = profile["step_ms"]
            print(f"{blas_info()}; sgemm 2048x2048 {sgemm['gflops_median']:.0f} GFLOP/s (median)")
            print(f"tinyflux MNIST training step on {args.backend}: {step_ms:.1f} ms (mean of 30 steps)")
            for key, value in profile["parts_ms"].items():
                print(f"  {key:32} {value:7.2f} ms  {value / step_ms:5.1%}")
            print("inside the ops (ms per step, share of the step; matrix products with GFLOP/s and share of sgemm's):")
            for key, value in profile["ops_ms"].items():
                rate = profile["matmul_gflops"].get(key)
                extra = f"  {rate:6.1f} GFLOP/s {rate / sgemm['gflops_median']:5.1%}" if rate else ""
                print(f"  {key:40} {value:7.2f} ms  {value / step_ms:5.1%}{extra}")
            pooling = sum(v for k, v in profile["ops_ms"].items() if k.startswith("maxpool"))
            print(f"  max-pooling forward and backward together: {pooling:.2f} ms, {pooling / step_ms:.1%} of the step")
        return profile

    layers = list(MNIST_LAYERS)
    if args.shape:
        n, c, h, w = (int(v) for v in args.shape.split(","))
        layers.append(("custom", n, c, h, w, args.kernel, args.out))
    report = {
        "backend": args.backend,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                   f"NumPy {np.__version__}",
        "blas": blas_info(),
        "torch": torch_desc,
        "threads": threads,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "sgemm": measure_sgemm(xp, timer, args.rounds),
        "layers": [measure_layer(xp, timer, layer, args.rounds, use_torch, torch_device) for layer in layers],
    }
    if not args.skip_step:
        report["training_step"] = measure_training_step(xp, timer, args.rounds, args.steps, use_torch, torch_device)
        report["adam"] = measure_adam(xp, timer, args.rounds)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return report


if __name__ == "__main__":
    main()
