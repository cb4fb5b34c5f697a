"""The fast paths against the NumPy path, on shapes hypothesis draws: the same convolution-pooling, forward and
backward, from the Numba kernels on 1, 2 and 3 threads and from the CUDA kernels (compiled for the CPU).

The NumPy path (``TINYFLUX_CPU_KERNELS=0``, ``backends/numpy_ops.py``) is the oracle: it is itself checked
against nested loops and gradcheck in test_conv.py. The Numba kernels must also give the same bits on any
number of threads, so that a run split over processes or resumed elsewhere repeats its numbers.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyflux as tf
from tinyflux import backends


@st.composite
def conv_pool_cases(draw):
    """(x, w, bias or None, pad, window): a convolution of stride 1 and the max-pooling after it."""
    d = draw(st.integers(1, 3))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    pad = tuple(draw(st.integers(0, k - 1)) for k in kernel)  # less than the kernel, as nn.Conv allows
    window = tuple(draw(st.lists(st.integers(1, 3), min_size=d, max_size=d)))
    # each size leaves at least one window of the convolution's output; clips stay small
    smallest = [max(1, k - 2 * p + w - 1) for k, p, w in zip(kernel, pad, window)]
    sizes = tuple(draw(st.integers(low, low + (5 if d < 3 else 2))) for low in smallest)
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c) + sizes).astype(np.float32)
    w = rng.standard_normal((o, c) + kernel).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32) if draw(st.booleans()) else None
    return x, w, bias, pad, window


def forward_and_backward(x, w, bias, pad, window) -> list:
    """[y, gx, gw, gb or None] of conv_maxpool (with bias and ReLU when bias is given)."""
    xt, wt = tf.Tensor(x, requires_grad=True), tf.Tensor(w, requires_grad=True)
    bt = None if bias is None else tf.Tensor(bias, requires_grad=True)
    y = tf.conv_maxpool(xt, wt, pad, window, bias_relu=bt)
    y.backward(np.cos(np.arange(y.size)).reshape(y.shape).astype(np.float32))  # each output its own gradient
    return [y.data, xt.grad, wt.grad, None if bt is None else bt.grad]


@contextlib.contextmanager
def cpu_kernels(on: bool, threads: int = 1):
    import numba
    previous, saved_threads = tf.modes.cpu_kernels, numba.get_num_threads()
    tf.modes.cpu_kernels = on
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    lanes = numba.get_num_threads
    numba.get_num_threads = lambda: threads  # the block kernels' lanes, beyond this machine's cores if asked
    try:
        yield
    finally:
        numba.get_num_threads = lanes
        numba.set_num_threads(saved_threads)
        tf.modes.cpu_kernels = previous


def assert_close(got: list, expected: list) -> None:
    for a, b in zip(got, expected):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))


@settings(max_examples=40, deadline=None)
@given(case=conv_pool_cases())
def test_numba_kernels_on_one_two_and_three_threads_match_numpy_and_each_other(case):
    pytest.importorskip("numba", reason="Numba is not installed (pip install 'tinyflux[fast]')")
    with cpu_kernels(False):
        expected = forward_and_backward(*case)
    results = []
    for threads in (1, 2, 3):
        with cpu_kernels(True, threads):
            results.append(forward_and_backward(*case))
    assert_close(results[0], expected)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert (a is None and b is None) or a.tobytes() == b.tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_pool_cases())
def test_cuda_kernels_match_numpy(gpu_path, monkeypatch, case):
    with monkeypatch.context() as numpy_only:  # the reference: without the stand-in's registration
        numpy_only.setattr(backends, "_registered", backends._registered[1:])
        with cpu_kernels(False):
            expected = forward_and_backward(*case)
    gpu_path.launches.clear()
    assert_close(forward_and_backward(*case), expected)
    assert gpu_path.launches  # the kernels ran, not NumPy
