"""One measured experiment: Winograd F(2x2, 3x3) for the forward pass of MNIST's 3x3 convolutions, in NumPy.

    python benchmarks/winograd_experiment.py

Winograd's minimal filtering computes each 2x2 block of outputs from a 4x4
tile of the input with 16 multiplications per (input, output) channel pair
instead of 36, a 2.25x saving (Lavin and Gray, 2015):

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* element by element)

with g the 3x3 kernel, d the 4x4 tile and the small constant matrices B, G,
A below. Across channels, the element-wise product becomes 16 matrix
products (O x C) @ (C x tiles), one per position in the 4x4 transformed tile.
This script checks it against ``tf.conv`` and times it beside tinyflux's
im2col forward pass, after a short rest before each call (see conv_bench's
Timer). It is not part of tinyflux: in NumPy the input and output transforms
are many element-wise passes over the whole batch, and the 16 products have
only C = 16 or 32 terms each.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided

import tinyflux as tf
from tinyflux.backends import NUMPY_OPS

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)  # kernel transform, 4x3


def input_transform(d, axis: int):
    """B^T along one axis of length 4: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    d0, d1, d2, d3 = (np.take(d, i, axis=axis) for i in range(4))
    return np.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], axis=axis)


def output_transform(m, axis: int):
    """A^T along one axis, 4 -> 2: rows (m0 + m1 + m2, m1 - m2 - m3)."""
    m0, m1, m2, m3 = (np.take(m, i, axis=axis) for i in range(4))
    return np.stack([m0 + m1 + m2, m1 - m2 - m3], axis=axis)


def winograd_conv(x, w):
    """A 3x3 convolution with padding 1 of x (N, C, H, W), H and W even, by w (O, C, 3, 3)."""
    n, c, h, width = x.shape
    o = w.shape[0]
    rows, cols = h // 2, width // 2  # 2x2 output blocks
    padded = np.zeros((c, n, h + 2, width + 2), np.float32)
    padded[:, :, 1:-1, 1:-1] = x.transpose(1, 0, 2, 3)  # (N, C, H, W) -> (C, N, H, W)
    s = padded.strides
    # overlapping 4x4 tiles every 2 positions, as a view: (C, N, rows, cols, 4, 4)
    tiles = as_strided(padded, (c, n, rows, cols, 4, 4), (s[0], s[1], 2 * s[2], 2 * s[3], s[2], s[3]))
    v = input_transform(input_transform(tiles, 4), 5)  # (C, N, rows, cols, 4, 4)
    v = v.transpose(4, 5, 0, 1, 2, 3).reshape(16, c, n * rows * cols)  # -> (4, 4, C, N, rows, cols) -> (16, C, P)
    u = (G @ w @ G.T).transpose(2, 3, 0, 1).reshape(16, o, c)  # (O, C, 4, 4) -> (4, 4, O, C) -> (16, O, C)
    m = np.matmul(u, v).reshape(4, 4, o, n, rows, cols)  # 16 products (O, C) @ (C, P)
    y = output_transform(output_transform(m, 0), 1)  # (2, 2, O, N, rows, cols)
    return y.transpose(3, 2, 4, 0, 5, 1).reshape(n, o, h, width)  # -> (N, O, rows, 2, cols, 2) -> (N, O, H, W)


def median_ms(fn, rounds: int = 30, pause_s: float = 0.02) -> float:
    fn()
    times = []
    for _ in range(rounds):
        time.sleep(pause_s)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    for shape, out in [((128, 16, 14, 14), 32), ((128, 32, 8, 8), 32)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal((out, shape[1], 3, 3), dtype=np.float32)
        reference = tf.conv(tf.Tensor(x), tf.Tensor(w), pad=1).numpy()
        error = float(np.abs(winograd_conv(x, w) - reference).max())
        u = rng.standard_normal((16, out, shape[1]), dtype=np.float32)
        v = rng.standard_normal((16, shape[1], shape[0] * shape[2] * shape[3] // 4), dtype=np.float32)
        print(f"input {shape}, {out} outputs: largest difference to tf.conv {error:.1e} "
              f"(largest output {float(np.abs(reference).max()):.0f})")
        print(f"  forward, median ms: im2col + one product "
              f"{median_ms(lambda: NUMPY_OPS.conv(x, w, None, (1, 1), (1, 1))):.2f}, "
              f"Winograd {median_ms(lambda: winograd_conv(x, w)):.2f}, "
              f"of which its 16 products alone {median_ms(lambda: np.matmul(u, v)):.2f}")


if __name__ == "__main__":
    main()
