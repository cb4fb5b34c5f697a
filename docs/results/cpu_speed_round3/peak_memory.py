"""One process, 12 training steps of the 3-D model on colour clips (3x16x32x32, 4 classes) at the batch given:
peak RSS and the median step after 2 of warm-up. Usage: python peak_memory.py 32"""
import resource, sys, time
import numpy as np
import tinyflux as tf
from tinyflux import optim
batch = int(sys.argv[1])
tf.seed(0)
model = tf.models.video_convnet(3, 4)
rng = np.random.default_rng(0)
x, y = rng.random((batch, 3, 16, 32, 32), dtype=np.float32), rng.integers(0, 4, batch)
step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=1e-3))
times = []
for _ in range(12):
    t = time.perf_counter(); step(x, y); times.append(time.perf_counter() - t)
print(f"batch {batch}: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
      f"step median {1e3 * sorted(times[2:])[5]:.1f} ms")
