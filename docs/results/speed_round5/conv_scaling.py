import numpy as np, time
from tinyflux.backends.numba_ops import NumbaOps
ops=NumbaOps()
rng=np.random.default_rng(0)
def t(f,n=3):
    f(); ts=[]
    for _ in range(n):
        st=time.perf_counter(); f(); ts.append(time.perf_counter()-st)
    return 1e3*min(ts)
for N in (8, 32):
    x=rng.standard_normal((N,16,8,56,56)).astype(np.float32); w=rng.standard_normal((32,16,3,3,3)).astype(np.float32)
    y,s=ops.conv(x,w,None,(1,1,1),(1,1,1))
    g=np.ones_like(y)
    a=t(lambda: ops.conv_backward(g,w,s,(True,True,False))); b=t(lambda: ops.conv_backward(g,w,s,(False,True,False)))
    f=t(lambda: ops.conv(x,w,None,(1,1,1),(1,1,1)))
    print(N, "forward %.0f  backward gx+gw %.0f  gw only %.0f"%(f,a,b))
