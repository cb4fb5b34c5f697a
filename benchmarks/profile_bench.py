"""Where a tinyflux training step spends its time: each Function, and each hot op of the backend inside them.

Run through ``python benchmarks/conv_bench.py --profile``.
"""
from __future__ import annotations

import time

import numpy as np

import tinyflux as tf
from tinyflux import optim
from tinyflux.backends import ops_for
from tinyflux.models import mnist_convnet as mnist_model

OPS_PROFILED = ("conv", "conv_backward", "conv_pool", "conv_pool_backward", "im2col", "col2im", "im2col_pooled",
                "col2im_pooled", "maxpool", "maxpool_backward", "maxpool_blocks", "maxpool_blocks_backward",
                "bias_relu", "relu_backward")  # and matmul, by shape


MODELS = {  # name: (build, one example's shape, classes)
    "MNIST": (mnist_model, (1, 28, 28), 10),
    "video": (lambda: tf.models.video_convnet(3, 4, 16, (32, 32)), (3, 16, 32, 32), 4),  # colour clips, 4 classes
    "own clips": (lambda: tf.models.video_bn_net(3, 4), (3, 16, 112, 112), 4),  # examples/video_conv.py --video-dir
}


def profile_training_step(xp, timer, steps: int = 30, batch: int = 128, model_name: str = "MNIST") -> dict:
    """Where a tinyflux training step spends its time: wall time inside each Function's forward and backward,
    and inside the backend's hot operations (each matrix product by shape, with its GFLOP/s). An op that calls
    others (NumpyOps.conv_pool calls im2col_pooled, matmul, maxpool_blocks) is charged only its own time.

    Every Function subclass and the ops object's methods are wrapped with a timer for this measurement; the
    rest of the step (Python, the autograd loop) is "other". On a GPU the parts are launch times (nothing
    waits for the GPU between them); only the step's total waits.
    """
    from tinyflux import tensor
    from tinyflux.functional import activations, basic, convolution, dense, losses, normalization

    totals: dict[str, float] = {}
    inside: dict[str, float] = {}  # the same for the ops object's methods
    flops: dict[str, int] = {}
    originals = []
    nested = []  # for each op running now, the time spent in the ops it called, which those are charged

    def wrap(cls, method, into=totals, key_of=None):
        original = cls.__dict__[method]
        originals.append((cls, method, original))

        def timed(self, *args):
            if into is inside:  # an op: charged its own time only
                nested.append(0.0)
            start = time.perf_counter()
            result = original(self, *args)
            elapsed = time.perf_counter() - start
            if into is inside:
                called = nested.pop()
                if nested:
                    nested[-1] += elapsed
                elapsed -= called
            key = key_of(args) if key_of else f"{cls.__name__}.{method}"
            into[key] = into.get(key, 0.0) + elapsed
            return result
        setattr(cls, method, timed)

    def matmul_key(args):
        (m, k), n = args[0].shape, args[1].shape[1]
        key = f"matmul ({m}x{k}) @ ({k}x{n})"
        flops[key] = 2 * m * k * n
        return key

    for module in (basic, activations, convolution, dense, losses, normalization):
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
        build, shape, classes = MODELS[model_name]
        x = xp.asarray(rng.uniform(0, 1, (batch, *shape)).astype(np.float32))
        y = xp.asarray(rng.integers(0, classes, batch))
        tf.seed(0)
        model = build() if xp is np else tf.gpu(build())
        train_step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
        for _ in range(3):
            train_step(x, y)
        totals.clear()
        inside.clear()
        total = timer(lambda: train_step(x, y), steps)
    finally:
        for cls, method, original in reversed(originals):
            setattr(cls, method, original)
    parts = {key: value / steps * 1e3 for key, value in sorted(totals.items(), key=lambda kv: -kv[1])}
    parts["other (Python, autograd loop)"] = total * 1e3 - sum(parts.values())
    ops_ms = {key: value / steps * 1e3 for key, value in sorted(inside.items(), key=lambda kv: -kv[1])}
    gflops = {key: flops[key] / (ops_ms[key] * 1e-3) / 1e9 for key in flops}
    return {"model": model_name, "batch": batch, "steps": steps, "step_ms": total * 1e3, "parts_ms": parts, "ops_ms": ops_ms,
            "matmul_gflops": gflops}


def print_profile(profile: dict, backend: str) -> None:
    step_ms, sgemm = profile["step_ms"], profile["sgemm_gflops"]
    print(f"tinyflux {profile.get('model', 'MNIST')} training step, batch {profile.get('batch', 128)}, on {backend}: "
          f"{step_ms:.1f} ms (mean of {profile.get('steps', 30)} steps)")
    for key, value in profile["parts_ms"].items():
        print(f"  {key:32} {value:7.2f} ms  {value / step_ms:5.1%}")
    print("inside the ops (ms per step, share of the step; matrix products with GFLOP/s and share of sgemm's):")
    for key, value in profile["ops_ms"].items():
        rate = profile["matmul_gflops"].get(key)
        extra = f"  {rate:6.1f} GFLOP/s {rate / sgemm:5.1%}" if rate else ""
        print(f"  {key:40} {value:7.2f} ms  {value / step_ms:5.1%}{extra}")
    pooling = sum(v for k, v in profile["ops_ms"].items() if k.startswith("maxpool"))
    if pooling:
        print(f"  max-pooling forward and backward together: {pooling:.2f} ms, {pooling / step_ms:.1%} of the step")
    else:  # NumbaOps: the pooling runs inside conv_pool and conv_pool_backward, not timed apart
        print("  max-pooling: inside conv_pool and conv_pool_backward")
