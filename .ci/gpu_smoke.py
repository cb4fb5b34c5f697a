"""First step of .ci/gpu_check: a quick look at each GPU piece, each in its own try block.

It prints the CUDA stack, compiles tinyflux's kernels, runs a few MNIST
training steps eagerly (CuPy ops, then tinyflux's own kernels) and as a
captured CUDA graph, and compares them with NumPy. The full checks are the test
suite and the benchmark; this step exists so that a failure shows its
traceback in the first seconds of a short GPU lease, with the other pieces
still tried.
"""
import sys
import time
import traceback

import numpy as np

import tinyflux as tf
from tinyflux import backends, optim
from tinyflux.backends import cuda_ops as kernels
from tinyflux.models import mnist_convnet as mnist_model

failures = []


def part(title):
    """Decorator: run the function now, print its title and either its result or its traceback."""
    def run(function):
        print(f"== {title}", flush=True)
        try:
            function()
        except Exception:
            failures.append(title)
            traceback.print_exc()
        sys.stdout.flush()
    return run


cp = backends.array_module("cupy")
rng = np.random.default_rng(0)
images = rng.random((128, 1, 28, 28), dtype=np.float32)
labels = rng.integers(0, 10, 128)


@part("CUDA stack")
def stack():
    print("cupy", cp.__version__, "runtime", cp.cuda.runtime.runtimeGetVersion(),
          "driver", cp.cuda.runtime.driverGetVersion(), cp.cuda.runtime.getDeviceProperties(0)["name"])
    from cupy._core import _accelerator
    print("reduction accelerators", _accelerator.get_reduction_accelerators(),
          "routine accelerators", _accelerator.get_routine_accelerators())


@part("compile tinyflux/backends/kernels.cu with NVRTC")
def compile_source():
    start = time.perf_counter()
    ops = backends.kernel_ops()
    for name in kernels.KERNELS:
        for dtype in (np.float32, np.float64):
            ops.function(name, dtype)
    ops.function("count_step")
    print(f"all kernels compiled and loaded in {time.perf_counter() - start:.2f} s")


def train(steps, device, use_kernels):
    """Losses and final parameters of `steps` Adam steps on the fixed batch."""
    tf.modes.own_kernels = use_kernels
    tf.seed(0)
    model = mnist_model()
    xp = np
    if device == "gpu":
        model, xp = tf.gpu(model), cp
    step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=3e-3))
    x, y = xp.asarray(images), xp.asarray(labels)
    losses = [float(step(x, y)) for _ in range(steps)]
    return losses, [backends.to_cpu_array(p.data) for p in model.parameters()]


reference = train(5, "cpu", False)
print("NumPy losses", np.round(reference[0], 6))


def compare(name, result):
    losses, params = result
    loss_error = max(abs(a - b) for a, b in zip(losses, reference[0]))
    param_error = max(float(np.max(np.abs(a - b))) for a, b in zip(params, reference[1]))
    print(f"{name}: losses {np.round(losses, 6)}; largest difference from NumPy: loss {loss_error:.2e}, "
          f"parameter {param_error:.2e}")


@part("eager steps on CuPy ops (kernels off)")
def eager_cupy():
    compare("CuPy", train(5, "gpu", False))


@part("eager steps on tinyflux's kernels (tf.modes.own_kernels)")
def eager_kernels():
    compare("kernels", train(5, "gpu", True))


@part("captured step: tf.capture, then 5 replays")
def captured():
    tf.modes.own_kernels = False  # a capture uses the kernels all the same
    tf.seed(0)
    model = tf.gpu(mnist_model())
    opt = optim.Adam(model.parameters(), lr=3e-3)
    x, y = cp.asarray(images), cp.asarray(labels)
    start = time.perf_counter()
    step = tf.capture(model, tf.logit_cross_entropy, opt, x, y)
    print(f"capture took {time.perf_counter() - start:.2f} s; {len(step.kept)} allocations kept for the graph")
    losses = [float(step(x, y)) for _ in range(5)]
    compare("captured", (losses, [backends.to_cpu_array(p.data) for p in model.parameters()]))
    step(x, y)
    cp.cuda.Device().synchronize()
    start = time.perf_counter()
    for _ in range(200):
        step(x, y)
    cp.cuda.Device().synchronize()
    print(f"replay: {(time.perf_counter() - start) / 200 * 1e3:.3f} ms per step (mean of 200)")


def adam_with_an_unused_parameter(device, use_kernels):
    """Bug 1 of issue 24: three Adam steps where one parameter has no gradient, so that Adam updates each
    parameter on its own and hands the kernel a convolution's strided weight gradient."""
    tf.modes.own_kernels = use_kernels
    tf.seed(0)
    model = mnist_model()
    unused = tf.Tensor(np.ones(5, np.float32), requires_grad=True)
    if device == "gpu":
        model, unused = tf.gpu(model), tf.gpu(unused)
    opt = optim.Adam(model.parameters() + [unused], lr=3e-3)
    xp = cp if device == "gpu" else np
    x, y = xp.asarray(images[:8]), xp.asarray(labels[:8])
    for _ in range(3):
        tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()
        opt.step()
        opt.zero_grad()
    return [backends.to_cpu_array(p.data) for p in model.parameters()]


@part("bug 1 probe: Adam with a parameter without gradient, GPU against NumPy, kernels on and off")
def unused_parameter():
    expected = adam_with_an_unused_parameter("cpu", False)
    for use_kernels in (True, False):
        got = adam_with_an_unused_parameter("gpu", use_kernels)
        error = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected))
        print(f"kernels {'on' if use_kernels else 'off'}: largest parameter difference {error:.2e}")
        assert error < 1e-4, "Adam's update differs from NumPy's"


@part("bug 3 probe: a loss that reads a float inside tf.capture reports its own error")
def capture_error_cause():
    tf.seed(0)
    model = tf.gpu(mnist_model())
    opt = optim.Adam(model.parameters(), lr=3e-3)
    x, y = cp.asarray(images), cp.asarray(labels)

    def loss_reading_a_float(logits, labels):
        loss = tf.logit_cross_entropy(logits, labels)
        print("  the loss read inside the capture:", float(loss.data))  # a host read: CUDA refuses it in a capture
        return loss

    try:
        tf.capture(model, loss_reading_a_float, opt, x, y)
    except tf.CaptureError as error:
        print("CaptureError:", error)
        assert "Invalidated" not in str(error).split("\n")[0], "the first line names the invalidated capture"
    else:
        raise AssertionError("a host read inside a capture went through")


print("smoke: failed parts:", failures or "none")
sys.exit(1 if failures else 0)
