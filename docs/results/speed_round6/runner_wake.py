"""What one numba_blocks.RUNNER.run costs with empty work: on one lane (a plain call) and on two (the
second lane on a pool thread, woken and waited for), microseconds per run, 2,000 runs.

    python docs/results/speed_round6/runner_wake.py
"""
import time

from tinyflux.backends.numba_blocks import RUNNER

RUNNER.run(lambda lane: None, 2)
for lanes in (1, 2):
    start = time.perf_counter()
    for _ in range(2000):
        RUNNER.run(lambda lane: None, lanes)
    print(f"{lanes} lane(s): {(time.perf_counter() - start) / 2000 * 1e6:.1f} microseconds per run")
