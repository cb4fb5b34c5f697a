"""One training step, in the three forms tinyflux has, behind one call: ``loss = step(x, y)``.

A training step is always the same four moves: scores = model(x), loss =
loss_fn(scores, y), loss.backward() (every parameter's gradient), and
optimizer.step() (every parameter moved against its gradient). What differs
is where and how:

- **eager** (the default): the four moves run one op at a time, on NumPy or CuPy;
- **captured** (``graph=True``, CUDA GPUs only): the first full-size batch
  records the whole step as one CUDA graph (``tf.capture``), and every later
  batch of that size replays it with one launch; a smaller last batch runs
  eagerly;
- **data-parallel** (a ``comm`` with several ranks): each rank takes its own
  slice of the global batch, and the optimizer sums the ranks' gradients,
  weighted by their examples, before the update (``tinyflux/distributed.py``),
  so every rank takes the step one process would have taken.

The step returns the loss as an array still on the device (a 0-d array): a
training loop adds them up without waiting for the GPU at every step.
"""
from __future__ import annotations

from .. import distributed
from ..cuda_graph import capture
from ..tensor import as_tensor


class Step:
    """``Step(model, loss_fn, optimizer, comm=None, graph=False)``; then ``loss = step(x, y)``.

    Args:
        model: the network, called on a Tensor of x.
        loss_fn: ``loss_fn(scores, y)`` -> scalar Tensor, e.g. ``tf.logit_cross_entropy``.
        optimizer: built over ``model.parameters()``; with several ranks it is wrapped in
            :class:`distributed.DataParallel` here (``step.optimizer`` is then the wrapper).
        comm: the ranks of a data-parallel job (``tf.distributed.init()``); None: one process.
        graph: record the step as a CUDA graph at the first call and replay it (GPU only).
    """

    def __init__(self, model, loss_fn, optimizer, comm=None, graph: bool = False):
        self.model, self.loss_fn = model, loss_fn
        self.comm = comm or distributed.Communicator()
        if self.comm.size > 1:
            if graph:
                raise ValueError("Step: a captured graph with several ranks is not supported")
            optimizer = distributed.DataParallel(optimizer, self.comm)
        self.optimizer = optimizer
        self.graph = graph
        # batch statistics and dropout while training; tf.train.predict switches to eval and back
        model.train()
        self.captured = None  # the CapturedStep, made at the first call when graph is on

    def __call__(self, x, y):
        """Forward, backward and update on the batch (x,
        y); returns this process's loss on the device."""
        if self.graph:
            if self.captured is None:
                self.captured = capture(self.model, self.loss_fn, self.optimizer, x, y)
            if tuple(x.shape) == self.captured.x.shape:  # a smaller last batch runs eagerly
                return self.captured(x, y)
        if self.comm.size > 1:
            return self._data_parallel(x, y)
        loss = self.loss_fn(self.model(as_tensor(x)), y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.data

    def _data_parallel(self, x, y):
        """This rank's slice of the batch; returns its share of the whole batch's mean loss.

        Every rank was handed the same whole batch (the same noise drawn), as one
        process would see it.
        """
        part = distributed.shard(len(y), self.comm)
        examples, share = part.stop - part.start, 0.0
        if examples:  # a short last batch can leave a rank without any
            loss = self.loss_fn(self.model(as_tensor(x[part])), y[part])
            loss.backward()
            share = loss.data * (examples / len(y))
        self.optimizer.step(examples=examples)  # the gradients of the whole batch, then the update
        self.optimizer.zero_grad()
        return share
