"""Per convolution layer of the MNIST model, and the matrix product under them: tinyflux beside PyTorch.

* sgemm: the GFLOP/s of one large float32 matrix product, the ceiling for im2col convolutions;
* per convolution layer: forward, backward to the input, backward to the weights; time,
  GFLOP/s (2*N*O*P*C*prod(K) each) and the fraction of the sgemm rate;
* Adam's update: one flat buffer against one update per parameter.

Run through ``python benchmarks/conv_bench.py`` (the default report).
"""
from __future__ import annotations

import statistics

import numpy as np

import tinyflux as tf
from tinyflux import backends, optim
from tinyflux.backends import ops_for
from tinyflux.backends.geometry import output_size
from tinyflux.functional.convolution import ConvFunction
from tinyflux.models import mnist_convnet as mnist_model
from timing import format_ms, summary, summary_ratio, torch

MNIST_LAYERS = [  # (name, N, C, H, W, K, O) of the three convolutions at batch 128
    ("conv1", 128, 1, 28, 28, 3, 16),
    ("conv2", 128, 16, 14, 14, 3, 32),
    ("conv3", 128, 32, 7, 7, 3, 32),
]


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
        tx = torch.tensor(backends.to_cpu_array(x), device=torch_device)
        tw = torch.tensor(backends.to_cpu_array(w), device=torch_device)
        tb = torch.tensor(backends.to_cpu_array(b), device=torch_device)
        tgy = torch.tensor(backends.to_cpu_array(gy), device=torch_device)

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


def ratio_line(label: str, r: dict) -> str:
    return f"  ratio {label} per round: min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}"


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
        print(ratio_line("tinyflux/PyTorch", r) + f" (ratio of medians {r['of_medians']:.2f})")
    if "torch_graphed_ms" in s:
        r = s["ratio_graphed"]
        print(f"  PyTorch, whole step as one CUDA graph {format_ms(s['torch_graphed_ms'])}")
        print(ratio_line("tinyflux/graphed PyTorch", r))
    if "torch_graphed_error" in s:
        print(f"  PyTorch CUDA graph: could not capture ({s['torch_graphed_error']})")
    if "tinyflux_graphed_ms" in s:
        print(f"  tinyflux, whole step as one CUDA graph (tf.capture) {format_ms(s['tinyflux_graphed_ms'])}")
    if "ratio_both_graphed" in s:
        print(ratio_line("graphed tinyflux/graphed PyTorch", s["ratio_both_graphed"]))
    if "tinyflux_graphed_error" in s:
        print(f"  tinyflux CUDA graph: could not capture ({s['tinyflux_graphed_error']})")
    if "tinyflux_graphed_own_gemm_ms" in s:
        print(f"  tinyflux, the same graph with its own GEMM instead of cuBLAS "
              f"{format_ms(s['tinyflux_graphed_own_gemm_ms'])}")
        print(ratio_line("graphed with cuBLAS/graphed with own GEMM", s["ratio_graphed_cublas_own_gemm"]))
    if "tinyflux_graphed_own_gemm_error" in s:
        print(f"  tinyflux CUDA graph with its own GEMM: could not capture ({s['tinyflux_graphed_own_gemm_error']})")
    if "tinyflux_without_kernels_ms" in s:
        r = s["ratio_kernels_on_off"]
        print(f"  tinyflux, eager with CuPy's operations instead of its kernels "
              f"{format_ms(s['tinyflux_without_kernels_ms'])}")
        print(ratio_line("kernels on/off", r))
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
        print(ratio_line("flat/per parameter", r))
