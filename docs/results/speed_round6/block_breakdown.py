"""Where the block convolution's time goes: each kernel and matrix product of numba_blocks, summed over
the lanes (so the sum of a phase is about twice its wall time on two lanes), for the own-clips model's
three convolutions at batch N, or with ``mnist`` for the MNIST convnet's three convolution-poolings
(2x2 windows, bias and ReLU).

    python docs/results/speed_round6/block_breakdown.py 8
    python docs/results/speed_round6/block_breakdown.py 32 mnist

A copy of numba_blocks' source with a timer around each call is compiled in memory as a module of the
package (so its relative imports work); nothing is written to disk.
"""
import sys
import time
import types

import numpy as np
from threadpoolctl import threadpool_limits

import tinyflux.backends
import tinyflux.backends.numba_blocks as original
import tinyflux.backends.numba_conv  # noqa: F401 (its source is read below)

TIMED = {  # a line of numba_blocks -> its name here
    "np.matmul(w_rows, col.reshape(rows, -1), out=y)": "forward GEMM",
    "_columns(flat, table, e0, e1, col)": "forward columns",
    "finish(y.reshape(o, windows, e1 - e0), e0, won)": "forward store (pool, for MNIST)",
    "load(gy_rows.reshape(o, windows, e1 - e0), e0)": "backward load (unpool, for MNIST)",
    "_columns(flat, table, e0, e1, col.reshape(rows, windows, e1 - e0))": "backward columns",
    "gw_rows += col @ gy_rows.T": "backward GEMM gw",
    "np.matmul(w_rows.T, gy_rows, out=col)": "backward GEMM gcol",
    "_add_columns(col.reshape(rows, windows, e1 - e0), table, e0, e1, gflat)": "backward add columns",
    "gflat = np.zeros_like(flat) if needs[0] else None": "backward zeros",
}
source = open(original.__file__).read()
lines = []
for line in source.splitlines():
    code = line.strip().split("  #")[0]
    if code in TIMED:
        indent = line[:len(line) - len(line.lstrip())]
        lines += [f"{indent}_start = _time.perf_counter()", line,
                  f"{indent}TIMES[{TIMED[code]!r}] = TIMES.get({TIMED[code]!r}, 0.0) + _time.perf_counter() - _start"]
    else:
        lines.append(line)
assert sum("_start = " in line for line in lines) == len(TIMED), "numba_blocks changed: update TIMED"
timed = types.ModuleType("tinyflux.backends._timed_blocks")
timed.__package__ = "tinyflux.backends"
timed.__dict__.update(_time=time, TIMES={})
exec(compile("\n".join(lines).replace("cache=True", "cache=False"), "timed_blocks", "exec"), timed.__dict__)
# numba_conv's plain convolution, on the timed drivers instead of numba_blocks' own
conv_source = open(tinyflux.backends.numba_conv.__file__).read()
drivers = "from .numba_blocks import backward_blocks, forward_blocks, planes_and_table"
assert drivers in conv_source, "numba_conv changed: update this script"
timed_conv = types.ModuleType("tinyflux.backends._timed_conv")
timed_conv.__package__ = "tinyflux.backends"
timed_conv.__dict__.update(backward_blocks=timed.backward_blocks, forward_blocks=timed.forward_blocks,
                           planes_and_table=timed.planes_and_table)
exec(compile(conv_source.replace(drivers, "").replace("cache=True", "cache=False"), "timed_conv", "exec"),
     timed_conv.__dict__)

batch, lanes = int(sys.argv[1]), int(sys.argv[3]) if len(sys.argv) > 3 else 2
mnist = sys.argv[2:3] == ["mnist"]
repeats = 100 if mnist else 5
layers = ([(1, 16, None, 28), (16, 32, None, 14), (32, 32, None, 7)] if mnist
          else [(3, 16, 16, 112), (16, 32, 8, 56), (32, 64, 4, 28)])


def forward_op(x, w, b):
    if mnist:
        return timed.conv_pool_blocks(x, w, (1, 1), (2, 2), lanes, b)
    return timed_conv.conv_blocks(x, w, b, (1, 1, 1), lanes)


def backward_op(gy, w, saved, needs):
    if mnist:
        return timed.conv_pool_blocks_backward(gy, w, saved, needs, lanes)
    return timed_conv.conv_blocks_backward(gy, w, saved, needs, lanes)


rng = np.random.default_rng(0)
with threadpool_limits(1, user_api="blas"):
    for c, o, t, h in layers:
        sizes = (h, h) if t is None else (t, h, h)
        x = rng.standard_normal((batch, c) + sizes).astype(np.float32)
        w = (0.1 * rng.standard_normal((o, c) + (3,) * len(sizes))).astype(np.float32)
        b = np.zeros(o, np.float32)
        needs = (c > 3, True, True)  # the first layer's input needs no gradient
        y, saved = forward_op(x, w, b)
        gy = np.ones_like(y)
        for _ in range(2):
            forward_op(x, w, b)
            backward_op(gy, w, saved, needs)
        timed.TIMES.clear()
        forward = backward = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            forward_op(x, w, b)
            forward += time.perf_counter() - start
            start = time.perf_counter()
            backward_op(gy, w, saved, needs)
            backward += time.perf_counter() - start
        parts = ", ".join(f"{name} {1e3 * total / repeats:.2f}" for name, total in sorted(timed.TIMES.items()))
        print(f"{c}->{o} channels, {'x'.join(map(str, sizes))}: forward {1e3 * forward / repeats:.2f} ms, "
              f"backward {1e3 * backward / repeats:.2f} ms (wall); summed over {lanes} lanes, ms: {parts}")
