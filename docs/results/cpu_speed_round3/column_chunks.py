"""The tried-and-dropped batch chunking of ConvMaxPoolFunction (columns built a chunk of the batch at a time, rebuilt in
the backward pass), timed by chunk size. Needs the chunked ConvMaxPoolFunction of the session that tried it (not in
the code any more); kept to show how it was measured. Usage: python column_chunks.py MEGABYTES"""
import sys, time
import numpy as np
import tinyflux as tf
from tinyflux import optim
from tinyflux.functional import convolution
convolution.COLUMN_CHUNK_BYTES = int(float(sys.argv[1]) * 2**20)
for name, build, shape, classes, batch in (("MNIST", tf.models.mnist_convnet, (1, 28, 28), 10, 128),
                                            ("video3", lambda: tf.models.video_convnet(3, 4), (3, 16, 32, 32), 4, 8),
                                            ("video3", lambda: tf.models.video_convnet(3, 4), (3, 16, 32, 32), 4, 32)):
    tf.seed(0)
    model = build()
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, *shape), dtype=np.float32), rng.integers(0, classes, batch)
    step = tf.train.Step(model, tf.logit_cross_entropy, optim.Adam(model.parameters(), lr=1e-3))
    times = []
    for _ in range(12):
        t = time.perf_counter(); step(x, y); times.append(time.perf_counter() - t)
    times = sorted(times[2:])
    print(f"chunk {sys.argv[1]:>5} MB  {name} b{batch}: min {1e3*times[0]:.1f} median {1e3*times[5]:.1f} ms")
