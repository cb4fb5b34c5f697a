"""tf.train.predict by chunk size (EVALUATION_VALUES input values per chunk): MNIST-sized images and colour clips,
median of 5 passes. Usage: python evaluation_chunk.py"""
import time, statistics
import numpy as np
import tinyflux as tf
from tinyflux.train import evaluate
rng = np.random.default_rng(0)
jobs = {"MNIST model, 10,000 images 28x28": (tf.models.mnist_convnet(), rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8)),
        "video model, 512 colour clips 3x16x32x32": (tf.models.video_convnet(3, 4), rng.integers(0, 256, (512, 3, 16, 32, 32), dtype=np.uint8))}
for name, (model, data) in jobs.items():
    print(name)
    for exponent in (16, 18, 20, 22):
        evaluate.EVALUATION_VALUES = 2 ** exponent
        chunk = max(1, 2 ** exponent // int(np.prod(data.shape[1:])))
        evaluate.predict(data[:chunk], model)
        times = []
        for _ in range(5):
            start = time.perf_counter(); evaluate.predict(data, model); times.append(time.perf_counter() - start)
        print(f"  2**{exponent} values per chunk ({chunk} examples): {len(data) / statistics.median(times):8.0f} examples/s "
              f"(min {min(times):.3f} s, median {statistics.median(times):.3f} s, max {max(times):.3f} s)")
