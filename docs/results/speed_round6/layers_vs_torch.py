"""Each convolution of the own-clips model at batch N, tinyflux (NumbaOps.conv, with bias) beside
PyTorch's conv3d, forward and backward, median of 5 after one warm-up; both on 2 threads.

    python docs/results/speed_round6/layers_vs_torch.py 8
"""
import sys
import time

import numpy as np
import torch

from tinyflux.backends.numba_ops import NumbaOps

torch.set_num_threads(2)


def median_ms(run, repeats=5):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


ops, rng, batch = NumbaOps(), np.random.default_rng(0), int(sys.argv[1])
for c, o, t, h in [(3, 16, 16, 112), (16, 32, 8, 56), (32, 64, 4, 28)]:
    x = rng.standard_normal((batch, c, t, h, h)).astype(np.float32)
    w = (0.1 * rng.standard_normal((o, c, 3, 3, 3))).astype(np.float32)
    b = np.zeros(o, np.float32)
    needs = (c != 3, True, True)  # the first layer's input needs no gradient, in both
    y, saved = ops.conv(x, w, b, (1, 1, 1), (1, 1, 1))
    gy = np.ones_like(y)
    forward = median_ms(lambda: ops.conv(x, w, b, (1, 1, 1), (1, 1, 1)))
    backward = median_ms(lambda: ops.conv_backward(gy, w, saved, needs))
    xt = torch.from_numpy(x).requires_grad_(needs[0])
    wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    gt = torch.ones(y.shape)
    with torch.no_grad():
        torch_forward = median_ms(lambda: torch.nn.functional.conv3d(xt, wt, bt, padding=1))
    both = median_ms(lambda: torch.nn.functional.conv3d(xt, wt, bt, padding=1).backward(gt))
    print(f"{c}->{o} channels, {t}x{h}x{h}, batch {batch}: tinyflux forward {forward:.0f} backward "
          f"{backward:.0f} ms | PyTorch forward {torch_forward:.0f} backward {both - torch_forward:.0f} ms")
