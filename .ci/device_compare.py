"""Twenty training steps of the MNIST model and of two 3-D video models, in NumPy and on another device, side
by side: dpnp (``xpu``) or one of PyTorch's devices (``torch:cpu``, ``torch:mps``, ...).

Usage: python .ci/device_compare.py DEVICE   (DEVICE as tf.to_device takes it; xpu when left out)

Each pair starts from the same weights and sees the same batches (and the
own-clips model, with BatchNorm and dropout, the same dropout draws, made on
the host); each step's loss is printed for both, and the script fails when
two differ by more than the job's tolerance:

- the MNIST model and the plain video model, float32: 1e-4;
- the own-clips model, float64: 1e-9. In float32 its losses drift far past
  1e-4 within 20 steps between *any* two summation orders (NumPy's code
  against Numba's kernels does the same): Adam turns the rounding noise in
  the gradients of the biases before each BatchNorm, which should be zero,
  into whole steps. Float64 shows that the arithmetic is the same. Where the
  device has no float64 (MPS, or TINYFLUX_TORCH_FLOAT32_ONLY=1), the
  own-clips model runs in float32 and only its first 5 steps are held to 1e-4.

Run by .ci/dpnp_check (xpu, in a virtual environment with tinyflux[xpu]) and
by .ci/run (torch:cpu, with and without TINYFLUX_TORCH_FLOAT32_ONLY=1);
tests/test_torch_arrays.py runs a shorter comparison in the suite.
"""
import sys

import numpy as np

import tinyflux as tf
from tinyflux import optim

STEPS = 20


def losses(build, x, y, move, steps: int = STEPS) -> list:
    tf.seed(0)
    model = move(build())
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = move(x), move(y)
    batch, result = 8, []
    for step in range(steps):
        part = slice(step * batch % len(x), step * batch % len(x) + batch)
        loss = tf.logit_cross_entropy(model(tf.Tensor(x[part])), y[part])
        loss.backward()
        opt.step()
        opt.zero_grad()
        result.append(float(tf.cpu(loss.data)))
    return result


def in_dtype(build, dtype):
    """``build`` with its parameters and floating buffers in ``dtype``."""
    def built():
        model = build()
        for p in model.parameters():
            p.data = p.data.astype(dtype)
        for _, buffer in model.named_buffers():
            if buffer.data.dtype.kind == "f":
                buffer.data = buffer.data.astype(dtype)
        return model
    return built


def describe(device: str) -> str:
    if device == "xpu":
        sycl = tf.backends.dpnp_module().asarray([0]).sycl_device
        return f"dpnp on {sycl.name} ({sycl.backend}, {sycl.device_type})"
    import torch
    moved = tf.to_device(np.zeros(1, np.float32), device)
    return f"PyTorch {torch.__version__} on {tf.backends.backend_name(moved)} ({tf.backends.get_array_module(moved)})"


def main(device: str) -> int:
    # The NumPy side runs the NumPy code, the reference that both other devices run too (NumpyOps on their arrays)
    tf.modes.cpu_kernels = False
    float64 = tf.backends.has_float64(tf.to_device(np.zeros(1, np.float32), device))
    rng = np.random.default_rng(0)
    bn_dtype, bn_steps, bn_tolerance = (np.float64, STEPS, 1e-9) if float64 else (np.float32, 5, 1e-4)
    jobs = {  # name: (build, images, labels, steps, tolerance)
        "mnist_convnet, 28x28 images, float32": (
            tf.models.mnist_convnet, rng.random((80, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 80),
            STEPS, 1e-4),
        "video_convnet, 3x16x32x32 clips, float32": (
            lambda: tf.models.video_convnet(3, 4, 16, (32, 32)), rng.random((40, 3, 16, 32, 32), dtype=np.float32),
            rng.integers(0, 4, 40), STEPS, 1e-4),
        f"video_bn_net (the own-clips model), 3x8x32x32 clips, {np.dtype(bn_dtype)}": (
            in_dtype(lambda: tf.models.video_bn_net(3, 4), bn_dtype),
            rng.random((40, 3, 8, 32, 32)).astype(bn_dtype), rng.integers(0, 4, 40), bn_steps, bn_tolerance),
    }
    failed = []
    for name, (build, x, y, steps, tolerance) in jobs.items():
        on_numpy = losses(build, x, y, tf.cpu, steps)
        on_device = losses(build, x, y, lambda obj: tf.to_device(obj, device), steps)
        print(f"{name}: step, NumPy loss, {device} loss, difference")
        for step, (a, b) in enumerate(zip(on_numpy, on_device), 1):
            print(f"  {step:2d}  {a:.10f}  {b:.10f}  {abs(a - b):.1e}")
        worst = max(abs(a - b) for a, b in zip(on_numpy, on_device))
        print(f"  largest difference {worst:.1e}, allowed {tolerance:.0e}")
        if not worst <= tolerance:
            failed.append(name)
    print(f"{describe(device)}: {'FAILED ' + ', '.join(failed) if failed else 'all within their tolerance'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "xpu"))
