import numpy as np, time, statistics
from tinyflux.backends.numba_ops import NumbaOps
from tinyflux.backends import numba_norm
ops=NumbaOps()
rng=np.random.default_rng(0)
x=rng.standard_normal((8,16,8,56,56)).astype(np.float32); w=rng.standard_normal((32,16,3,3,3)).astype(np.float32)
y,s=ops.conv(x,w,None,(1,1,1),(1,1,1)); g=np.ones_like(y)
big=rng.standard_normal((8,16,16,112,112)).astype(np.float32)
numba_norm.channel_moments(big)
res={True:[],False:[]}
for i in range(16):
    before = i % 2 == 0
    if before: numba_norm.channel_moments(big)   # a parallel kernel right before
    else: big.sum()  # about as long, on one thread
    st=time.perf_counter(); ops.conv_backward(g,w,s,(True,True,False)); res[before].append(time.perf_counter()-st)
for k,v in res.items(): print("after a parallel kernel" if k else "after numpy     ", "%.1f ms median"%(1e3*statistics.median(v)), "min %.1f"%(1e3*min(v)))
