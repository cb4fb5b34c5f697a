"""tf.capture (tinyflux/cuda_graph.py) on the stand-in for CuPy: what the graph records, replays and refuses.

The stand-in's "graph" replays by running the recorded Python again, so these
tests check tinyflux's side of a capture; that CUDA records and replays the
launches is checked on a GPU by tests/test_parity.py.
"""
import numpy as np
import pytest

import tinyflux as tf
from tinyflux.backends import cublas_calls
from tinyflux.modes import capturing
from small_models import mnist_like_batches, mnist_like_model
from tinyflux import optim


def replay_by_rerunning(fake, step):
    """Make the stand-in's graph replay ``step`` by running its recorded work again, into the same loss array."""
    def replay():
        with capturing(step.cublas):
            step.loss[...] = step._record()
    fake.replay = replay


@pytest.mark.parametrize("cublas", [True, False], ids=["cublas", "own-gemm"])
@pytest.mark.parametrize("video", [False, True], ids=["images", "video"])
def test_a_captured_step_replays_like_eager_steps(request, monkeypatch, video, cublas):
    """tf.capture through FakeCupy, whose "graph" replays by running the recorded Python again.

    What this checks: inside the capture every matrix product goes to cuBLAS,
    whose workspace was set once before the capture (the stand-in refuses
    cuBLAS in a capture without it), or with cublas=False to the own GEMM
    kernel, and the step still computes what the eager NumPy step does; t
    and a learning-rate drop reach the Adam kernel through device memory; each
    batch is copied into the static inputs; the rehearsal before capture
    leaves parameters and t as they were; nothing synchronizes during capture,
    and its allocations are kept. What it cannot check: that CUDA records and
    replays these launches; tests/test_parity.py does that on a GPU.
    """
    batches = mnist_like_batches(6, video)
    tf.seed(0)
    model = mnist_like_model(video)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    expected_losses = []
    for i, (x, y) in enumerate(batches):
        opt.lr = 1e-3 if i >= 3 else 1e-2
        loss = tf.logit_cross_entropy(model(tf.Tensor(x)), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        expected_losses.append(loss.item())
    expected = [p.data.copy() for p in model.parameters()]

    fake = request.getfixturevalue("gpu_path")
    tf.seed(0)
    model = mnist_like_model(video)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    before = [p.data.copy() for p in model.parameters()]
    step = tf.capture(model, tf.logit_cross_entropy, opt, *batches[0], cublas=cublas)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    assert opt.t == 0 and step.kept and step.cublas == cublas
    products = "cublas_gemm" if cublas else "gemm"
    assert {products, "count_step", "adam", "im2col", "col2im", "maxpool", "maxpool_backward", "tinyflux_bias_relu",
            "tinyflux_relu_backward"} <= set(fake.launches_in_capture)
    assert ({"cublas_gemm", "gemm"} - {products}).isdisjoint(fake.launches_in_capture)
    if cublas:  # one handle, with one workspace, on the stream the capture ran on
        assert fake.allocations == [cublas_calls.WORKSPACE_BYTES]
        assert list(fake.cublas_library.handles) == [1]
    else:
        assert fake.allocations == [] and fake.cublas_library.handles == {}

    replay_by_rerunning(fake, step)
    losses = []
    for i, (x, y) in enumerate(batches):
        opt.lr = 1e-3 if i >= 3 else 1e-2
        losses.append(float(step(x, y)))
    assert opt.t == 6
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for e, p in zip(expected, model.parameters()):
        np.testing.assert_allclose(p.data, e, rtol=1e-5, atol=1e-6)


def test_capture_refuses_what_it_cannot_record(request, monkeypatch):
    tf.seed(0)
    model = mnist_like_model()
    x, y = mnist_like_batches(1)[0]
    with pytest.raises(tf.CaptureError, match="needs the model on a GPU .* its parameters are numpy arrays"):
        tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    with pytest.raises(tf.CaptureError, match="optim.Adam expected, got SGD"):
        tf.capture(model, tf.logit_cross_entropy, optim.SGD(model.parameters()), x, y)
    with pytest.raises(tf.CaptureError, match="must hold exactly model.parameters()"):
        tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()[:2]), x, y)

    fake = request.getfixturevalue("gpu_path")

    def loss_that_reads_the_gpu(scores, labels):  # as float(loss) would inside a real capture
        if fake.capturing:
            raise RuntimeError("operation not permitted when stream is capturing")
        return tf.logit_cross_entropy(scores, labels)
    with pytest.raises(tf.CaptureError, match=r"CUDA could not record the step \(RuntimeError: operation not "
                                              r"permitted when stream is capturing\)\. During a capture only"):
        tf.capture(model, loss_that_reads_the_gpu, optim.Adam(model.parameters()), x, y)
    assert not fake.capturing  # the capture was ended

    step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    with pytest.raises(ValueError, match=r"x must be float32\(4, 1, 12, 12\) as at capture, "
                                         r"got float32\(3, 1, 12, 12\)"):
        step(x[:3], y)
    with pytest.raises(ValueError, match="labels must lie in 0..9, got values from 0 to 10"):
        step(x, np.array([0, 1, 2, 10]))

    with_dropout = tf.nn.Chain(*model.layers[:-1], tf.nn.Dropout(0.5), model.layers[-1])
    with pytest.raises(tf.CaptureError, match=r"Dropout\(0.5\) draws a new mask every step, which a captured step"):
        tf.capture(with_dropout, tf.logit_cross_entropy, optim.Adam(with_dropout.parameters()), x, y)
    with_dropout.eval()  # without dropping, nothing random is recorded: that captures
    tf.capture(with_dropout, tf.logit_cross_entropy, optim.Adam(with_dropout.parameters()), x, y)


def test_a_captured_step_resumes_from_a_checkpoint(request, monkeypatch, tmp_path):
    """tf.load between replays writes into the buffers the graph reads, and its t reaches the Adam kernel."""
    fake = request.getfixturevalue("gpu_path")
    batches = mnist_like_batches(6)
    tf.seed(0)
    model = mnist_like_model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    step = tf.capture(model, tf.logit_cross_entropy, opt, *batches[0])

    replay_by_rerunning(fake, step)

    for x, y in batches[:3]:
        step(x, y)
    tf.save(tmp_path / "halfway.h5", model, opt)
    first = [float(step(x, y)) for x, y in batches[3:]]
    after_first = [p.data.copy() for p in model.parameters()]
    tf.load(tmp_path / "halfway.h5", model, opt)
    assert opt.t == 3
    second = [float(step(x, y)) for x, y in batches[3:]]
    assert second == first and opt.t == 6
    for p, expected in zip(model.parameters(), after_first):
        np.testing.assert_array_equal(p.data, expected)


def test_cublas_gets_one_handle_and_workspace(request):
    """One cuBLAS handle and workspace per GPU, made before the first capture, whatever the number of captures."""
    fake = request.getfixturevalue("gpu_path")
    x, y = mnist_like_batches(1)[0]
    tf.seed(0)
    model = mnist_like_model()
    first = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    second = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    assert first.cublas and second.cublas and fake.allocations == [cublas_calls.WORKSPACE_BYTES]
    assert list(fake.cublas_library.handles) == [1]


def test_without_a_cublas_library_captures_keep_the_own_gemm(request, monkeypatch, caplog):
    """No cuBLAS library found: the captured step takes the own GEMM, said in the log."""
    fake = request.getfixturevalue("gpu_path")
    monkeypatch.setattr(cublas_calls, "load_library", lambda: None)
    x, y = mnist_like_batches(1)[0]
    tf.seed(0)
    model = mnist_like_model()
    with caplog.at_level("WARNING", logger="tinyflux"):
        step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    assert not step.cublas and fake.allocations == []
    assert "gemm" in fake.launches_in_capture and "cublas_gemm" not in fake.launches_in_capture
    assert "no cuBLAS library found" in caplog.text


def test_a_capture_that_cuda_refuses_with_cublas_is_made_again_with_the_own_gemm(request, monkeypatch, caplog):
    """Where CUDA refuses to record our cuBLAS calls, the step is captured again with the own GEMM, said in the
    log (test_a_captured_step_replays_like_eager_steps checks what that graph computes)."""
    fake = request.getfixturevalue("gpu_path")

    def refused(*args):
        if fake.capturing:
            raise RuntimeError("operation not permitted when stream is capturing")
        return 0
    monkeypatch.setattr(fake.cublas_library, "cublasSgemm_v2", refused)
    x, y = mnist_like_batches(1)[0]
    tf.seed(0)
    model = mnist_like_model()
    with caplog.at_level("WARNING", logger="tinyflux"):
        step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    assert not step.cublas
    assert "gemm" in fake.launches_in_capture
    assert "capturing again with tinyflux's own GEMM" in caplog.text and "operation not permitted" in caplog.text


def test_a_cublas_library_without_set_workspace_keeps_the_own_gemm(
        request, monkeypatch, caplog):
    """A cuBLAS too old to have cublasSetWorkspace_v2 is refused before any capture: said in the log, not an error."""
    fake = request.getfixturevalue("gpu_path")
    x, y = mnist_like_batches(1)[0]
    tf.seed(0)
    model = mnist_like_model()
    monkeypatch.delattr(type(fake.cublas_library), "cublasSetWorkspace_v2")
    with caplog.at_level("WARNING", logger="tinyflux"):
        step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    assert not step.cublas and "cannot serve them (AttributeError" in caplog.text
    assert "cublas_gemm" not in fake.launches_in_capture


def test_cublas_failing_in_the_rehearsal_gives_the_own_gemm(request, monkeypatch, caplog):
    """A cuBLAS call failing in the rehearsal: the step is captured again with the own GEMM, said in the log."""
    fake = request.getfixturevalue("gpu_path")
    monkeypatch.setattr(fake.cublas_library, "cublasSgemm_v2", lambda *args: 13)  # CUBLAS_STATUS_EXECUTION_FAILED
    x, y = mnist_like_batches(1)[0]
    tf.seed(0)
    model = mnist_like_model()
    with caplog.at_level("WARNING", logger="tinyflux"):
        step = tf.capture(model, tf.logit_cross_entropy, optim.Adam(model.parameters()), x, y)
    assert not step.cublas and "cuBLAS status 13" in caplog.text
    assert "gemm" in fake.launches_in_capture and "cublas_gemm" not in fake.launches_in_capture
