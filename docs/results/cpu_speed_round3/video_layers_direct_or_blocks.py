import time, statistics, numpy as np, numba
from threadpoolctl import threadpool_limits
from tinyflux.backends import numba_blocks as nb
from tinyflux.backends.numba_ops import NumbaOps
def t(fn, n=10):
    fn(); ts = []
    for _ in range(n):
        s = time.perf_counter(); fn(); ts.append(time.perf_counter() - s)
    return statistics.median(ts) * 1e3
rng = np.random.default_rng(0)
ops = NumbaOps()
import sys
B = int(sys.argv[1])
for c, o, s in ((3, 8, (16, 32, 32)), (8, 16, (8, 16, 16)), (16, 32, (4, 8, 8))):
    x = rng.standard_normal((B, c) + s).astype(np.float32)
    w = rng.standard_normal((o, c, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y, sv = ops.conv_pool(x, w, (1, 1, 1), (2, 2, 2), b)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    needs = (c > 3, True, True)
    df = t(lambda: ops.conv_pool(x, w, (1, 1, 1), (2, 2, 2), b)); db = t(lambda: ops.conv_pool_backward(gy, w, sv, needs))
    with threadpool_limits(1, "blas"):
        yb, svb = nb.conv_pool_blocks(x, w, (1, 1, 1), (2, 2, 2), 2, b)
        bf = t(lambda: nb.conv_pool_blocks(x, w, (1, 1, 1), (2, 2, 2), 2, b)); bb = t(lambda: nb.conv_pool_blocks_backward(gy, w, svb, needs, 2))
    print(f"C={c} O={o}: direct fwd {df:.1f} bwd {db:.1f} | blocks fwd {bf:.1f} bwd {bb:.1f} | maxdiff {abs(y - yb).max():.1e}")
