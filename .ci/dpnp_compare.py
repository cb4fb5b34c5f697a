"""Twenty training steps of the MNIST model and of the 3-D video model, in NumPy and in dpnp, side by side.

Both start from the same weights and see the same batches (and the bn video
model the same dropout draws, made on the host); each step's loss is printed
for both, and the script fails when any two differ by more than 1e-4.
Run by .ci/dpnp_check, in a virtual environment with tinyflux[xpu].
"""
import sys

import numpy as np

import tinyflux as tf
from tinyflux import optim

STEPS, TOLERANCE = 20, 1e-4


def losses(build, x, y, move) -> list:
    tf.seed(0)
    model = move(build())
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x, y = move(x), move(y)
    batch, result = 8, []
    for step in range(STEPS):
        part = slice(step * batch % len(x), step * batch % len(x) + batch)
        loss = tf.logit_cross_entropy(model(tf.Tensor(x[part])), y[part])
        loss.backward()
        opt.step()
        opt.zero_grad()
        result.append(float(tf.cpu(loss.data)))
    return result


def main() -> int:
    rng = np.random.default_rng(0)
    jobs = {
        "mnist_convnet, 28x28 images": (tf.models.mnist_convnet, rng.random((80, 1, 28, 28), dtype=np.float32),
                                        rng.integers(0, 10, 80)),
        "video_convnet, 3x16x32x32 clips": (lambda: tf.models.video_convnet(3, 4, 16, (32, 32)),
                                            rng.random((40, 3, 16, 32, 32), dtype=np.float32), rng.integers(0, 4, 40)),
    }
    worst = 0.0
    for name, (build, x, y) in jobs.items():
        on_numpy, on_dpnp = losses(build, x, y, tf.cpu), losses(build, x, y, tf.xpu)
        print(f"{name}: step, NumPy loss, dpnp loss, difference")
        for step, (a, b) in enumerate(zip(on_numpy, on_dpnp), 1):
            print(f"  {step:2d}  {a:.6f}  {b:.6f}  {abs(a - b):.1e}")
        worst = max(worst, max(abs(a - b) for a, b in zip(on_numpy, on_dpnp)))
    device = tf.backends.dpnp_module().asarray([0]).sycl_device
    print(f"dpnp on {device.name} ({device.backend}, {device.device_type}); largest difference {worst:.1e}, "
          f"allowed {TOLERANCE:.0e}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
