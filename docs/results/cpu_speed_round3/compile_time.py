"""Seconds of the first and of later training steps of the 3-D model, batch 8: the first one compiles (or loads) the kernels."""
import time, numpy as np
t0 = time.perf_counter()
import tinyflux as tf
from tinyflux import optim
t_import = time.perf_counter() - t0
tf.seed(0); model = tf.models.video_convnet(3, 4)
rng = np.random.default_rng(0)
x, y = rng.random((8, 3, 16, 32, 32), dtype=np.float32), rng.integers(0, 4, 8)
step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=1e-3))
times = []
for _ in range(5):
    t = time.perf_counter(); step(x, y); times.append(time.perf_counter() - t)
print(f"import tinyflux {t_import:.2f} s; first step {times[0]:.2f} s; later steps {1e3 * np.median(times[1:]):.1f} ms; "
      f"ops {type(tf.backends.cpu_ops()).__name__}")
