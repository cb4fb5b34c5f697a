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
- **Numbers that change live in GPU memory.** The step counter t and the
  learning rate are read by the Adam kernel from a small device array, whose t
  a one-thread kernel advances at every replay; a new ``opt.lr`` (or a
  checkpoint's t, betas or eps) is copied there before the next replay.
- **Nothing CUDA refuses during capture.** No cuBLAS (tinyflux's own GEMM
  kernel runs instead), no copies between host and device, no waiting for the
  GPU (so the label range check runs on the host, in ``step``). All kernels
  are compiled in a rehearsal step before capture, so capture launches only.
  See ``backend.capture_safe``.

The parameters must sit in the optimizer's flat buffer (``optim.Adam`` puts
them there); the graph updates that buffer in place, so the model, ``tf.save``
and evaluation see every replayed step.

On an H100 a replayed MNIST step takes 0.68 ms, of which 0.64 ms is the
GPU's own work, against 2.7 ms or more for the same step run eagerly from
Python; 100 replayed steps give the parameters of 100 eager ones to float32
tolerance (tests/test_parity.py). Without a GPU, tests/test_cuda_kernels.py
checks this module on a stand-in for CuPy.
"""
from __future__ import annotations

import numpy as np

from . import backend, optim
from .tensor import Tensor


class CaptureError(RuntimeError):
    """The step cannot be captured as a CUDA graph; the message says why."""


def capture(model, loss_fn, optimizer, x, y) -> "CapturedStep":
    """Record one training step of ``model`` on a batch shaped like (x, y) as a CUDA graph.

    ``loss_fn(scores, y)`` must return a scalar Tensor; ``optimizer`` must be an
    :class:`optim.Adam` over ``model.parameters()``, all on the GPU. x and y are
    only examples: their shapes and dtypes are fixed for the life of the step.
    """
    return CapturedStep(model, loss_fn, optimizer, x, y)


class CapturedStep:
    """``step(x, y)``: one replay of the captured forward, backward and Adam update; returns the loss."""

    def __init__(self, model, loss_fn, optimizer, x, y):
        if not isinstance(optimizer, optim.Adam):
            raise CaptureError(f"capture: optim.Adam expected, got {type(optimizer).__name__}")
        params = list(model.parameters())
        if [id(p) for p in params] != [id(p) for p in optimizer.params]:
            raise CaptureError("capture: the optimizer must hold exactly model.parameters(), in order")
        if not backend.is_gpu_array(params[0].data):
            raise CaptureError("capture: a CUDA graph needs the model on a GPU (tf.gpu(model), with CuPy and an "
                               f"NVIDIA GPU); its parameters are {backend.backend_name(params[0].data)} arrays")
        if len(optimizer.groups) != 1:
            raise CaptureError("capture: all parameters must share one dtype, got "
                               + ", ".join(str(group.parameters.data.dtype) for group in optimizer.groups))
        cp = backend.array_module("cupy")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        group = optimizer.groups[0]
        self.buffer, self.m, self.v = group.parameters, group.m, group.v
        # the static inputs: each step copies its batch into these two arrays
        self.x = cp.array(x.data if isinstance(x, Tensor) else x)
        self.y = cp.array(y.data if isinstance(y, Tensor) else y)
        self.hyper = cp.array(self._hyperparameters(), dtype=cp.float64)
        self.uploaded = self._hyperparameters()  # what self.hyper holds, as the host last set it

        # Rehearsal: the whole step once, outside the capture, compiles every kernel and copies every
        # geometry array to the GPU, so that capture itself only launches. Then the parameters, m, v
        # and t are put back as they were: capturing changes nothing.
        state = (self.buffer.data, self.m, self.v, self.hyper)
        saved = [array.copy() for array in state]
        with backend.capture_safe():
            self._record()
        for array, before in zip(state, saved):
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
            with stream, backend.capture_safe(), cp.cuda.using_allocator(keep_alive_malloc):
                stream.begin_capture()
                try:
                    self.loss = self._record()
                finally:
                    graph = stream.end_capture()
        except Exception as error:
            raise CaptureError(
                f"capture: CUDA could not record the step ({type(error).__name__}: {error}). During a capture "
                "only kernel launches are allowed: no cuBLAS, no copies to or from the host, no waiting for the "
                "GPU (see tinyflux/graph.py)") from error
        self.graph = graph
        optimizer.zero_grad()  # the gradients belong to the graph now; eager steps make their own

    def _hyperparameters(self) -> list:
        """(lr, beta1, beta2, eps, t): the layout of ``self.hyper`` that the ``adam`` kernel reads."""
        opt = self.optimizer
        return [opt.lr, *opt.betas, opt.eps, opt.t]

    def _record(self):
        """The work the graph holds: forward, backward, t <- t + 1 and the Adam update. Returns the loss array."""
        from . import cuda
        loss = self._forward_backward()
        self.buffer.gather_grads()
        cuda.adam(self.buffer.data, self.buffer.grad, self.m, self.v, self.hyper)  # advances t in self.hyper
        return loss.data

    def _forward_backward(self) -> Tensor:
        self.optimizer.zero_grad()
        scores = self.model(Tensor(self.x))
        self.classes = scores.shape[-1]  # for the host-side label check in __call__
        loss = self.loss_fn(scores, self.y)
        loss.backward()
        return loss

    def __call__(self, x, y):
        cp = backend.array_module("cupy")
        x = x.data if isinstance(x, Tensor) else x
        y = y.data if isinstance(y, Tensor) else y
        for name, new, static in (("x", x, self.x), ("y", y, self.y)):
            if tuple(new.shape) != static.shape or new.dtype != static.dtype:
                raise ValueError(f"captured step: {name} must be {static.dtype}{static.shape} as at capture, "
                                 f"got {new.dtype}{tuple(new.shape)}")
        if isinstance(y, np.ndarray) and y.ndim == 1 and y.size and (y.min() < 0 or y.max() >= self.classes):
            raise ValueError(f"captured step: labels must lie in 0..{self.classes - 1}, "
                             f"got values from {y.min()} to {y.max()}")
        opt = self.optimizer
        if self._hyperparameters() != self.uploaded:  # a learning-rate drop, or a loaded checkpoint
            self.hyper[...] = cp.asarray(self._hyperparameters(), dtype=cp.float64)
        self.buffer.attach()  # a parameter replaced since the last step is copied back into the buffer
        self.x[...] = cp.asarray(x)  # from the host or the GPU, into the arrays the graph reads
        self.y[...] = cp.asarray(y)
        self.graph.launch(stream=cp.cuda.get_current_stream())
        opt.t += 1  # the graph advanced its own copy of t
        self.uploaded = self._hyperparameters()
        return self.loss.copy()  # the graph overwrites self.loss at the next replay
