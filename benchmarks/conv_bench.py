"""Benchmark tinyflux's convolutions and the MNIST training step, side by side with PyTorch.

    python benchmarks/conv_bench.py                       # table, CPU (NumPy)
    python benchmarks/conv_bench.py --json                # the same figures as JSON
    python benchmarks/conv_bench.py --shape 64,16,32,32 --kernel 3 --out 32
    python benchmarks/conv_bench.py --backend cupy        # on a CUDA GPU
    python benchmarks/conv_bench.py --distributed --rounds 7 --steps 20   # 2 MPI ranks against 1 process
    python benchmarks/conv_bench.py --sweep --rounds 7 --steps 3   # batch 32, 128, 512 and the video model

One file per measurement, this one choosing among them and printing:

    layers_bench.py       sgemm, each convolution layer's three products, Adam's update (the default report)
    step_bench.py         the MNIST training step at batch 128, with its GPU variants (the default report)
    sweep_bench.py        --sweep: the step by model and batch
    profile_bench.py      --profile: the time inside each Function and each backend op of a step
    distributed_bench.py  --distributed: 2 MPI ranks against 1 process, each launch of its own
    timing.py             the timer, summaries and ratios, the BLAS in use, PyTorch's networks and step

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

import numpy as np

import tinyflux as tf
from distributed_bench import measure_distributed, print_distributed
from layers_bench import MNIST_LAYERS, measure_adam, measure_layer, measure_sgemm, print_table
from profile_bench import print_profile, profile_training_step
from step_bench import measure_training_step
from sweep_bench import OWN_CLIPS, SWEEP, measure_sweep, print_sweep
from timing import Timer, blas_info, blas_threads, torch

PROFILED_STEPS = (("MNIST", 128), ("video", 8), ("video", 32))  # --profile: (model, batch)


def parse(argv=None) -> argparse.Namespace:
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
                        "previous round are asleep (see timing.Timer)")
    p.add_argument("--skip-step", action="store_true", help="only the per-layer measurements")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--profile", action="store_true", help="only: time spent in each op of a tinyflux training step")
    p.add_argument("--sweep", action="store_true",
                   help="only: the training step at batch 32, 128 and 512, and the video model, beside PyTorch")
    p.add_argument("--own-clips", action="store_true",
                   help="only: the own-clips model (video_bn_net) at batch 8 and 32 of 3x16x112x112 clips, beside PyTorch")
    p.add_argument("--distributed", action="store_true",
                   help="only: the MNIST step as 2 MPI ranks x 1 BLAS thread against 1 process x 2 threads, "
                        "and PyTorch's in a process of its own (needs pip install 'tinyflux[mpi]' mpich)")
    args = p.parse_args(argv)
    if args.pause < 0:
        p.error(f"--pause must be 0 or more seconds, got {args.pause}")
    if args.rounds < 1 or args.steps < 1:
        p.error(f"--rounds and --steps must be at least 1, got {args.rounds} and {args.steps}")
    return args


def pytorch_side(args, threads: int) -> tuple[bool, str, str]:
    """(whether PyTorch runs beside tinyflux, on which device, and a line that says so)."""
    device = "cuda" if args.backend == "cupy" else "cpu"
    use = torch is not None and not args.no_torch and (device == "cpu" or torch.cuda.is_available())
    if use:
        torch.set_num_threads(threads)
        return True, device, f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
    if torch is None:
        return False, device, "not installed (pip install torch==2.13.0 for the CPU build): tinyflux figures only"
    return False, device, "skipped"


def show(result, as_json: bool, printer, *extra) -> dict:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        printer(result, *extra)
    return result


def main(argv=None) -> dict:
    args = parse(argv)
    if args.distributed:
        return show(measure_distributed(args.rounds, args.steps), args.json, print_distributed)
    xp = tf.backends.array_module(args.backend)  # raises a clear error when CuPy or the GPU is missing
    # on a GPU, wait for the whole device: PyTorch's work is queued on its own streams
    timer = Timer(xp.cuda.Device().synchronize) if args.backend == "cupy" else Timer(lambda: None, args.pause)
    threads = blas_threads()
    use_torch, torch_device, torch_desc = pytorch_side(args, threads)
    if not args.json:
        print(f"{blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; PyTorch: {torch_desc}")
    if args.sweep or args.own_clips:
        return show(measure_sweep(xp, timer, args.rounds, args.steps, use_torch, torch_device,
                                  OWN_CLIPS if args.own_clips else SWEEP), args.json, print_sweep)
    if args.profile:  # the MNIST step at batch 128, and the 3-D video model's at batch 8 and 32
        sgemm = measure_sgemm(xp, timer, args.rounds)
        if not args.json:
            print(f"sgemm 2048x2048 {sgemm['gflops_median']:.0f} GFLOP/s (median)")
        profiles = [profile_training_step(xp, timer, batch=batch, model_name=name) | {"sgemm_gflops":
                                                                                     sgemm["gflops_median"]}
                    for name, batch in PROFILED_STEPS]
        return show(profiles, args.json, lambda all_profiles, backend: [print_profile(one, backend)
                                                                        for one in all_profiles], args.backend)

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
    return show(report, args.json, print_table)


if __name__ == "__main__":
    main()
