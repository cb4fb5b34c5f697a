"""Bugs of the GPU path found without a GPU (issue 24), each checked on the emulated kernels (tests/cuda_emulation.py
compiles kernels.cu and the element-wise kernels' C bodies for the CPU; tests/fake_cupy.py launches them)."""
import numpy as np
import pytest

import tinyflux as tf
from tinyflux import cuda_graph, optim
from tinyflux.backends import NumpyOps


def three_adam_steps_with_an_unused_parameter():
    tf.seed(0)
    model = tf.models.mnist_convnet()
    unused = tf.Tensor(np.ones(5, np.float32), requires_grad=True)  # never in the graph: no gradient
    opt = optim.Adam(model.parameters() + [unused], lr=3e-3)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)
    for _ in range(3):
        tf.logit_cross_entropy(model(tf.Tensor(x)), y).backward()  # a conv's weight gradient is a strided view
        opt.step()
        opt.zero_grad()
    return [p.data.copy() for p in model.parameters()]


def test_adam_with_a_parameter_without_gradient_updates_strided_gradients_right(request):
    """Before: the adam kernel read a transposed weight gradient as if it were contiguous."""
    reference = three_adam_steps_with_an_unused_parameter()  # NumPy
    request.getfixturevalue("gpu_path")  # from here, the CUDA kernels on the CPU
    for kernels, numpy in zip(three_adam_steps_with_an_unused_parameter(), reference):
        np.testing.assert_allclose(kernels, numpy, rtol=1e-4, atol=1e-6)


def test_a_broken_capture_reports_its_cause_not_the_invalidated_capture(gpu_path, monkeypatch):
    """Before: end_capture() in a finally raised cudaErrorStreamCaptureInvalidated over the real error."""
    from fake_cupy import FakeStream

    def invalidated(self):
        self.fake.capturing = False
        raise RuntimeError("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error")

    monkeypatch.setattr(FakeStream, "end_capture", invalidated)
    model = tf.models.mnist_convnet()

    def loss(scores, labels):
        if gpu_path.capturing:  # the capture itself, not the rehearsal before it
            raise RuntimeError("the loss read a number from the GPU")
        return tf.logit_cross_entropy(scores, labels)

    with pytest.raises(tf.CaptureError, match="the loss read a number from the GPU"):
        tf.capture(model, loss, optim.Adam(model.parameters()), np.zeros((4, 1, 28, 28), np.float32),
                   np.arange(4))


def test_the_kernels_keep_nan_as_numpy_does(gpu_path):
    """Before: bias_relu and relu_backward turned NaN into 0, and max-pooling skipped it."""
    numpy, kernels = NumpyOps(), gpu_path.ops
    x = np.array([[[[np.nan, -1.0], [2.0, 3.0]]]], np.float32)  # (1, 1, 2, 2)
    b = np.zeros(1, np.float32)
    np.testing.assert_array_equal(kernels.bias_relu(x, b), numpy.bias_relu(x, b))
    gy = np.array([[[[np.nan, 1.0], [np.nan, 2.0]]]], np.float32)
    y = np.array([[[[0.0, 1.0], [np.nan, -1.0]]]], np.float32)
    np.testing.assert_array_equal(kernels.relu_backward(gy, y), numpy.relu_backward(gy, y))
    pooled, _ = kernels.maxpool(x, (2, 2), (2, 2))
    assert np.isnan(pooled).all() and np.isnan(numpy.maxpool(x, (2, 2), (2, 2))[0]).all()


def test_captured_steps_check_gpu_labels_without_a_read_per_step(gpu_path, monkeypatch):
    """Before: only NumPy labels were checked; a captured step took out-of-range GPU labels silently."""
    model = tf.models.mnist_convnet()
    x = np.zeros((4, 1, 28, 28), np.float32)
    step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, np.arange(4))
    gpu_path.replay = lambda: None  # what the graph computes does not matter here, only the label check
    monkeypatch.setattr(cuda_graph, "backend_name", lambda array: "cupy")  # the labels as if on the GPU
    step(x, np.arange(4))  # the first replay is checked at once (one read): fine
    for _ in range(cuda_graph.LABEL_CHECK_EVERY - 1):
        step(x, np.array([0, 1, 2, 12]))  # counted on the device, not read
    with pytest.raises(ValueError, match=r"labels must lie in 0..9; 99 labels in the last 101 steps did not"):
        step(x, np.arange(4))  # replay 101: the next read
