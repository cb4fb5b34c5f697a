"""The own-clips model's first convolution forward at batch N with blocks of at most CAP positions
(0: numba_blocks' own cut), on LANES lanes; after a rest of PAUSE seconds.

    python docs/results/speed_round6/small_blocks.py CAP N LANES PAUSE

Two processes of one lane and half the batch each, started together, give what two lanes would
without sharing Python's lock:
    python small_blocks.py 768 4 1 2 & python small_blocks.py 768 4 1 2; wait
"""
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from tinyflux.backends import numba_blocks, numba_conv

cap, batch, lanes, pause = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
if cap:
    cut = numba_blocks._blocks

    def capped(length, rows, itemsize):
        size = min(cut(length, rows, itemsize)[0][1], cap)
        return [(start, min(start + size, length)) for start in range(0, length, size)]

    numba_blocks._blocks = capped
rng = np.random.default_rng(0)
x = rng.standard_normal((batch, 3, 16, 112, 112)).astype(np.float32)
w = (0.1 * rng.standard_normal((16, 3, 3, 3, 3))).astype(np.float32)
b = np.zeros(16, np.float32)
with threadpool_limits(1, user_api="blas"):
    for _ in range(3):
        numba_conv.conv_blocks(x, w, b, (1, 1, 1), lanes)
    time.sleep(pause)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        numba_conv.conv_blocks(x, w, b, (1, 1, 1), lanes)
        times.append(time.perf_counter() - start)
print(f"blocks of at most {cap or 'the own cut'}, batch {batch}, {lanes} lane(s): "
      f"median {1e3 * np.median(times):.1f} ms")
