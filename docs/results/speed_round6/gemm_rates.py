"""GFLOP/s of OpenBLAS's sgemm on one thread for the block products of the own-clips model's
convolutions (numba_blocks, at the block sizes it cuts), and for a 1024-cube product for reference.

    python docs/results/speed_round6/gemm_rates.py
"""
import time

import numpy as np
from threadpoolctl import threadpool_limits

from tinyflux.backends.numba_blocks import _blocks


def gflops(run, flops, repeats=30):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return flops / float(np.median(times)) / 1e9


rng = np.random.default_rng(0)
with threadpool_limits(1, user_api="blas"):
    a, b = rng.random((1024, 1024), np.float32), rng.random((1024, 1024), np.float32)
    print(f"1024 x 1024 x 1024: {gflops(lambda: a @ b, 2 * 1024 ** 3):.0f} GFLOP/s")
    for o, rows in [(16, 81), (32, 432), (64, 864)]:
        size = _blocks(10 ** 7, rows, 4)[0][1]  # positions per block, as numba_blocks cuts them
        w, col = rng.random((o, rows), np.float32), rng.random((rows, size), np.float32)
        gy, y = rng.random((o, size), np.float32), np.empty((o, size), np.float32)
        gcol, flops = np.empty((rows, size), np.float32), 2 * o * rows * size
        print(f"O={o}, C*27={rows}, block of {size}: forward W @ col "
              f"{gflops(lambda: np.matmul(w, col, out=y), flops):.0f}, weight gradient col @ gy.T "
              f"{gflops(lambda: col @ gy.T, flops):.0f}, column gradient W.T @ gy "
              f"{gflops(lambda: np.matmul(w.T, gy, out=gcol), flops):.0f} GFLOP/s")
