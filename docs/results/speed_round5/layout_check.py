import numpy as np, time
from tinyflux.backends.numba_ops import NumbaOps
ops=NumbaOps()
rng=np.random.default_rng(0)
x=rng.standard_normal((8,16,8,56,56)).astype(np.float32); w=rng.standard_normal((32,16,3,3,3)).astype(np.float32); b=np.zeros(32,np.float32)
y,s=ops.conv(x,w,b,(1,1,1),(1,1,1))
print(y.strides)
g1=np.ascontiguousarray(y); g2=np.empty_like(y); g2[...]=y
print(g1.strides, g2.strides)
def t(f,n=5):
    f(); ts=[]
    for _ in range(n):
        st=time.perf_counter(); f(); ts.append(time.perf_counter()-st)
    return "%.1f"%(1e3*min(ts))
for name,g in (("NCTHW",g1),("as y",g2)):
    print(name, t(lambda: ops.conv_backward(g,w,s,(True,True,True))))
