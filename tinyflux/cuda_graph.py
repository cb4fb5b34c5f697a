"""A whole training step recorded once as a CUDA graph, then replayed: ``tf.capture``.

Why: on a GPU, one MNIST training step is about 70 kernel launches of a few
microseconds of arithmetic each, and the CPU needs 5 to 30 microseconds to
issue each launch from Python. The step is bound by the launches, not by the
GPU. CUDA can *record* the launches that a stream receives (stream capture)
into a graph, and then replay the whole graph with a single call, about a
microsecond per kernel. ::

    step = tf.capture(model, tf.logit_cross_entropy, opt, x_example, y_example)
    for x, y in batches:
        loss = step(x, y)      # forward, backward and Adam update: one graph launch

What a replay repeats is exactly what the GPU was asked to do during capture,
with the same memory addresses and the same kernel arguments. Everything
follows from that:

- **Static inputs.** The graph reads the batch from two arrays made at
  capture time; ``step(x, y)`` copies each new batch into them first.
- **Memory kept for the graph's life.** Every array allocated during capture
  (activations, gradients, the loss) is held by the step, so CuPy's memory
  pool never hands that memory to anything else.
- **Numbers that change live in GPU memory.** Adam keeps its learning rate,
  betas, eps and step count t in a small array on the GPU (``hyper``), which
  its update kernel reads, eager or replayed, and whose t a one-thread kernel
  advances at every step; a new ``opt.lr`` or a loaded checkpoint writes into
  that array, so the next replay sees it.
- **Nothing CUDA refuses during capture.** No allocation: the matrix
  products go to cuBLAS through a handle of tinyflux's own with a workspace
  of its own, both made before the rehearsal and kept for the life of the
  process (``backends/cublas_calls.py``: CuPy's own cuBLAS calls refuse a
  capturing stream); with ``cublas=False``, where no cuBLAS library is found,
  or where CUDA refuses to record those calls (the step is then captured
  again, and the log says why), tinyflux's own GEMM kernel runs instead. No
  copies between host and device, no waiting for the GPU (so the label range
  check runs on the host, in ``step``). All kernels are compiled in a
  rehearsal step before capture, so capture launches only. ``modes.capture``
  (``tinyflux/modes.py``) tells the ops to keep to these rules.

The parameters must sit in the optimizer's flat buffer (``optim.Adam`` puts
them there); the graph updates that buffer in place, so the model, ``tf.save``
and evaluation see every replayed step.

On a GPU, tests/test_parity.py checks that 100 replayed steps give the
parameters of 100 eager ones to float32 tolerance; without one,
tests/test_capture.py checks this module on a stand-in for CuPy (the
measured times are in docs/results/h100).
"""
from __future__ import annotations

import logging

from . import optim
from .backends import backend_name, ops_for
from .backends.cublas_calls import CublasError
from .modes import capturing
from .tensor import Tensor


log = logging.getLogger("tinyflux")

# GPU labels are checked at the first replay, then once every this many replays
LABEL_CHECK_EVERY = 100


class CaptureError(RuntimeError):
    """The step cannot be captured as a CUDA graph; the message says why."""


class _RecordingFailed(CaptureError):
    """CUDA refused something during the capture itself (not the checks before it)."""


def capture(model, loss_fn, optimizer, x, y, cublas: bool = True) -> "CapturedStep":
    """Record one training step of ``model`` on a batch shaped like (x, y) as a CUDA graph.

    ``loss_fn(scores, y)`` must return a scalar Tensor; ``optimizer`` must be an
    :class:`optim.Adam` over ``model.parameters()``, all on the GPU. x and y are
    only examples: their shapes and dtypes are fixed for the life of the step.
    ``cublas``: the graph's matrix products are cuBLAS's where it can record them
    (``step.cublas`` says whether it did); False keeps tinyflux's own GEMM.
    """
    return CapturedStep(model, loss_fn, optimizer, x, y, cublas)


class CapturedStep:
    """``step(x, y)``: one replay of the captured
    forward, backward and Adam update; returns the loss."""

    def __init__(self, model, loss_fn, optimizer, x, y, cublas: bool = True):
        # AdamW's decay reads the learning rate on the host: not recordable yet
        if type(optimizer) is not optim.Adam:
            raise CaptureError(f"capture: optim.Adam expected, got {type(optimizer).__name__}")
        params = list(model.parameters())
        if [id(p) for p in params] != [id(p) for p in optimizer.params]:
            raise CaptureError("capture: the optimizer must hold exactly "
                               "model.parameters(), in order")
        with capturing():
            ops = ops_for(params[0].data)
        cp = ops.cupy  # the ops that can record a graph bring their CuPy; others None
        if cp is None:
            raise CaptureError("capture: a CUDA graph needs the model on a GPU (tf.gpu(model), "
                               "with CuPy and an NVIDIA GPU); its parameters are "
                               f"{backend_name(params[0].data)} arrays")
        try:
            # [parameters, m, v, hyper]: what the graph reads and writes
            self.state = optimizer.flat_state()
        except ValueError as error:
            raise CaptureError(f"capture: {error}") from None
        self.cupy = cp
        # cuBLAS in the graph where our own handle and its workspace can be made (now, outside
        # any capture: making them allocates)
        self.cublas = cublas and ops.cublas_recordable()
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        # the static inputs: each step copies its batch into these two arrays
        self.x = cp.array(x.data if isinstance(x, Tensor) else x)
        self.y = cp.array(y.data if isinstance(y, Tensor) else y)

        try:
            graph = self._rehearse_and_record()
        # CUDA refusing the capture, or cuBLAS failing in the rehearsal before it
        except (_RecordingFailed, CublasError) as error:
            if not self.cublas:
                raise
            # cuBLAS through our own handle has not run on every GPU and CUDA version: where
            # CUDA refuses to record it, the own GEMM still gives a graph
            log.warning("%s; capturing again with tinyflux's own GEMM kernel", error)
            self.cublas = False
            graph = self._rehearse_and_record()
        self.graph = graph
        optimizer.zero_grad()  # the gradients belong to the graph now; eager steps make their own
        # out-of-range GPU labels seen, replays with GPU labels
        self.bad_labels, self.replays = 0, 0

    def _rehearse_and_record(self):
        """The CUDA graph of one step: a rehearsal, then the capture (see the module docstring)."""
        cp, optimizer = self.cupy, self.optimizer
        # Rehearsal: the whole step once, outside the capture, compiles every kernel and copies
        # every geometry array to the GPU, so that capture itself only launches. Then the
        # parameters, m, v and t are put back as they were: capturing changes nothing.
        saved = [array.copy() for array in self.state]
        with capturing(self.cublas):
            self._record()
        for array, before in zip(self.state, saved):
            array[...] = before
        optimizer.zero_grad()
        cp.cuda.get_current_stream().synchronize()

        self.kept = []  # every allocation made during capture, alive as long as the graph
        pool = cp.get_default_memory_pool()

        def keep_alive_malloc(size):
            memory = pool.malloc(size)
            self.kept.append(memory)
            return memory

        stream = cp.cuda.Stream(non_blocking=True)
        try:
            with stream, capturing(self.cublas), cp.cuda.using_allocator(keep_alive_malloc):
                stream.begin_capture()
                try:
                    self.loss = self._record()
                except Exception:
                    # End the capture, but report what broke it: ending an
                    # invalidated capture raises cudaErrorStreamCaptureInvalidated,
                    # which would otherwise replace the cause.
                    try:
                        stream.end_capture()
                    except Exception:
                        pass
                    raise
                return stream.end_capture()
        except Exception as error:
            raise _RecordingFailed(
                f"capture: CUDA could not record the step ({type(error).__name__}: {error}). "
                "During a capture only kernel launches are allowed: no allocation, no copies to "
                "or from the host, no waiting for the GPU (see tinyflux/cuda_graph.py)") from error

    def _record(self):
        """The work the graph holds: forward, backward
        and the optimizer's step. Returns the loss array."""
        loss = self._forward_backward()
        # t <- t + 1 and the update, both in GPU memory: the same Adam as eager steps
        self.optimizer.step()
        return loss.data

    def _forward_backward(self) -> Tensor:
        self.optimizer.zero_grad()
        scores = self.model(Tensor(self.x))
        self.classes = scores.shape[-1]  # for the host-side label check in __call__
        loss = self.loss_fn(scores, self.y)
        loss.backward()
        return loss

    def check_labels(self) -> None:
        """Raise if any GPU labels given to the replays
        so far were out of range (one read from the GPU)."""
        if int(self.bad_labels):
            raise ValueError(f"captured step: labels must lie in 0..{self.classes - 1}; "
                             f"{int(self.bad_labels)} labels in the last "
                             f"{self.replays} steps did not")

    def __call__(self, x, y):
        cp = self.cupy
        x = x.data if isinstance(x, Tensor) else x
        y = y.data if isinstance(y, Tensor) else y
        for name, new, static in (("x", x, self.x), ("y", y, self.y)):
            if tuple(new.shape) != static.shape or new.dtype != static.dtype:
                raise ValueError(f"captured step: {name} must be {static.dtype}{static.shape} as "
                                 f"at capture, got {new.dtype}{tuple(new.shape)}")
        on_host = backend_name(y) == "numpy"
        if on_host and y.ndim == 1 and y.size and (y.min() < 0 or y.max() >= self.classes):
            raise ValueError(f"captured step: labels must lie in 0..{self.classes - 1}, "
                             f"got values from {y.min()} to {y.max()}")
        if not on_host and y.ndim == 1:  # GPU labels: counted on the GPU, read now and then
            # no wait for the GPU
            self.bad_labels = self.bad_labels + ((y < 0) | (y >= self.classes)).sum()
            self.replays += 1
            if self.replays % LABEL_CHECK_EVERY == 1:
                self.check_labels()
        # a parameter replaced since the last step goes back into the buffer
        self.optimizer.attach_parameters()
        self.x[...] = cp.asarray(x)  # from the host or the GPU, into the arrays the graph reads
        self.y[...] = cp.asarray(y)
        self.graph.launch(stream=cp.cuda.get_current_stream())
        return self.loss.copy()  # the graph overwrites self.loss at the next replay
