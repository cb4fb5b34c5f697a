"""The pieces of a training loop that every run needs,
and ``fit``, the loop written once for any model.

An epoch loop written with these pieces (``examples/mnist_conv.py`` has one)::

    with Run(settings) as run:                                  # lock the folder; resume or start
        history = run.start(model, opt, schedule, noise)        # load the saved state with --resume
        step = Step(model, loss_fn, opt, run.comm, settings.graph)
        for epoch in run.epochs(settings.epochs):
            rng = noise.for_epoch(epoch)
            for x, y in run.batches(train_x, train_y):          # progress bar, shuffling, timing
                run.record(step(augment(x, rng), y))            # the loss stays on the device
            loss = run.end_epoch()                              # the log line; NaN stops the run
            with deferred_interrupt():                          # saved whole or not at all
                acc = accuracy(eval_x, eval_y, model, run.comm)
                history.add(loss, acc, opt.lr)
                if schedule.improved(acc):
                    run.save_best(epoch=epoch, accuracy=acc)
                run.save_state(schedule.update(epoch, acc, opt))

:func:`fit` is that loop with its log lines, for a model and arrays of your own.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time

import numpy as np
from tqdm import tqdm

from .. import checkpoint, distributed
from ..backends import array_module, to_xpu_array
from ..data import batches, num_batches, to_float_images
from ..device import gpu
from ..functional import logit_cross_entropy
from ..nn import Module, seed
from ..optim import Adam, Optimizer
from ..tensor import Tensor
from .evaluate import (accuracy, any_nan, check_examples, check_labels_fit, example_shape,
                       split_validation, warn_if_sorted)
from .flags import Settings, settings_of
from .report import History
from .runs import (DivergedError, RunFolder, RunFolderError, deferred_interrupt, refuse_to_replace,
                   restore)
from .schedule import ModelZoo
from .step import Step

log = logging.getLogger("tinyflux.train")


class RandomStream:
    """The random numbers of a run's per-batch augmentation, resumable.

    On the CPU one NumPy generator, seeded once, serves the whole run, and its
    state is saved with the run state. CuPy's generators cannot be saved, so on a
    GPU each epoch draws from a generator seeded by (seed, epoch), which a
    resumed run rebuilds. On dpnp's device (``--device xpu``) and PyTorch's
    (``--device torch:NAME``) the CPU's generator draws and its arrays are
    moved (:class:`DrawnOnHost`): the same numbers as a CPU run, and a state
    that is saved as on the CPU.
    """

    def __init__(self, seed: int, on_gpu: bool = False, move=None):
        self.seed, self.on_gpu, self.move = seed, on_gpu, move
        self.rng = np.random.default_rng(seed)

    @classmethod
    def for_run(cls, settings: Settings) -> "RandomStream":
        """The stream for a run with these settings, on its device."""
        moved = settings.on_xpu() or settings.on_torch()
        return cls(settings.seed, settings.on_gpu(), settings.to_device if moved else None)

    def for_epoch(self, epoch: int):
        """The generator to draw this epoch's noise from."""
        if self.on_gpu:
            self.rng = array_module("cupy").random.default_rng([self.seed, epoch])
        return DrawnOnHost(self.rng, self.move) if self.move else self.rng

    def state(self) -> str:
        """The CPU generator's state as JSON; "" on a GPU."""
        return "" if self.on_gpu else json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        if state and not self.on_gpu:  # a state saved by a CPU run (a GPU run reseeds every epoch)
            self.rng.bit_generator.state = json.loads(state)


class DrawnOnHost:
    """A NumPy generator whose arrays go to a device with ``move`` (dpnp
    and TorchArrays refuse to mix with NumPy's arrays); single numbers
    (a crop's corner, a coin flip) stay Python numbers on the host.

    Every method of NumPy's Generator works (``uniform``, ``standard_normal``, ``integers``, ...):
    each call is passed on, and an array that comes back is moved."""

    def __init__(self, rng: np.random.Generator, move=to_xpu_array):
        self.rng, self.move = rng, move

    def __getattr__(self, name: str):
        # AttributeError, as from the Generator itself, for a name it lacks
        draw = getattr(self.rng, name)

        def drawn_and_moved(*args, **kwargs):
            result = draw(*args, **kwargs)
            return self.move(result) if isinstance(result, np.ndarray) else result
        return drawn_and_moved


class Run:
    """One training run in the folder ``settings.savepath``,
    on one process or on every rank of a job.

    Entering locks the folder and decides how the run starts (new, ``resume``
    or ``force``: see :class:`RunFolder`), before any data is loaded; rank 0
    alone owns the folder and tells the other ranks. Then :meth:`start`,
    and each epoch :meth:`batches`, :meth:`record`, :meth:`end_epoch`,
    :meth:`save_best` and :meth:`save_state`.
    """

    def __init__(self, settings: Settings, comm=None):
        self.settings = settings
        if not comm:
            comm = distributed.init() if settings.distributed else distributed.Communicator()
        self.comm = comm
        self.folder = RunFolder(settings.savepath, settings.checkpoint)
        self.best_path = self.folder.best
        self.saved = None  # the saved state's attributes when resuming
        self.first_epoch, self.epoch, self.stopped = 1, 0, ""

    def __enter__(self) -> "Run":
        if self.comm.size > 1:
            distributed.limit_blas_threads(self.comm)  # ranks x BLAS threads <= cores
            if self.settings.on_gpu():
                distributed.select_gpu(self.comm)  # one GPU per rank on each machine
        saved = None
        if self.comm.rank == 0:
            self.folder.acquire()
            try:
                saved = self.folder.prepare(self.settings.resume, self.settings.force,
                                            settings_of(self.settings))
                finished = saved is not None and not saved["stopped"]
                if finished and saved["epoch"] >= self.settings.epochs:
                    raise RunFolderError(f"--resume: the run in {self.settings.savepath} has "
                                         f"finished its {saved['epoch']} epochs; to train it "
                                         "further, resume with more, such as "
                                         f"--epochs {saved['epoch'] + 5}")
            except BaseException:
                self.folder.release()
                raise
        self.saved = self.comm.broadcast_object(saved)
        return self

    def __exit__(self, *exc) -> None:
        self.folder.release()

    def start(self, model, optimizer, schedule, noise: RandomStream, **metadata) -> History:
        """Hand over what the run state holds; with ``resume``, load it. Returns the history so far.

        ``metadata`` (plain values: the input shape, class names) goes into every checkpoint.
        """
        self.model, self.optimizer, self.schedule, self.noise = model, optimizer, schedule, noise
        self.metadata, self.history = metadata, History()
        # weights, Adam's m and v, t and the learning rate
        if self.saved is not None and self.comm.rank == 0:
            self.folder.load_state(model, optimizer)
        if self.comm.size > 1:  # every rank starts from rank 0's model and optimizer, loaded or new
            distributed.broadcast_parameters(model, self.comm)
            distributed.broadcast_optimizer(optimizer, self.comm)
        if self.saved is not None:
            restore(self.saved, schedule, self.history, noise)
            self.first_epoch, self.stopped = self.saved["epoch"] + 1, self.saved["stopped"]
            log.info(f"Resuming the run in {self.settings.savepath} after epoch "
                     f"{self.saved['epoch']} (best accuracy {schedule.best_accuracy:.4f} in "
                     f"epoch {schedule.best_epoch})")
            if self.stopped:
                log.info(" -> That run had already stopped "
                         f"({self.stopped}): nothing more to train")
        return self.history

    def epochs(self, last: int):
        """The epochs still to run, up to ``last``; none once the run has stopped."""
        for epoch in range(self.first_epoch, last + 1):
            if self.stopped:
                return
            self.epoch = epoch
            yield epoch

    def batches(self, images, labels):
        """This epoch's batches (float32 x, labels):
        consecutive, or shuffled with ``settings.shuffle``.

        At most ``settings.max_steps`` of them; a progress
        bar on a terminal; the epoch's timer starts here."""
        settings = self.settings
        if self.epoch == self.first_epoch:
            warn_if_sorted(labels, settings.shuffle)
        self.steps = num_batches(len(images), settings.batch_size)
        if settings.max_steps:
            self.steps = min(self.steps, settings.max_steps)
        self.total_loss, self.done = 0.0, 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=self.steps, desc=f"epoch {self.epoch}", leave=False,
                        disable=not sys.stderr.isatty() or self.comm.rank > 0)
        order = np.random.default_rng(settings.seed + self.epoch)  # used only with shuffle
        epoch_batches = batches(images, labels, settings.batch_size, settings.shuffle, order)
        for step, batch in enumerate(epoch_batches):
            if step == self.steps:
                break
            yield batch

    def record(self, loss) -> None:
        """Add one step's loss (still on the device: no
        wait for the GPU) and move the progress bar."""
        self.total_loss += loss
        self.bar.update()
        if self.done % 50 == 0:
            self.bar.set_postfix(loss=f"{float(loss):.4f}")
        self.done += 1

    def end_epoch(self) -> float:
        """Log the epoch's time and mean loss; stop with
        DivergedError on NaN. Returns the mean loss."""
        self.bar.close()
        elapsed = time.perf_counter() - self.started
        # ranks' shares
        mean_loss = distributed.sum_over_ranks([float(self.total_loss)], self.comm)[0] / self.steps
        log.info(f"[{self.epoch}]: {elapsed:.1f} s, {1000 * elapsed / self.steps:.1f} ms/step, "
                 f"mean training loss {mean_loss:.4f}")
        nan_params = any_nan(self.model)
        # an error, and nothing of this epoch is saved
        if nan_params or not math.isfinite(mean_loss):
            best = (f"its best model, from epoch {self.schedule.best_epoch}, is in {self.best_path}"
                    if self.schedule.best_epoch else "no model was saved")
            raise DivergedError(f"[{self.epoch}]: training diverged (mean loss {mean_loss}, NaN "
                                f"parameters: {nan_params}); {best}. A smaller --lr may help")
        if self.comm.size > 1:
            # ranks that drifted apart are an error
            distributed.check_same_parameters(self.model, self.comm)
            # BatchNorm's statistics of the ranks' slices
            distributed.average_buffers(self.model, self.comm)
        return mean_loss

    def save_best(self, **metadata) -> None:
        """Save the model as the run's best (rank 0
        writes), with the run's metadata and ``metadata``."""
        log.info(f" -> New best accuracy! Saving model out to {self.best_path}")
        if self.comm.rank == 0:
            self.folder.save_best(self.model, self.optimizer, **metadata, **self.metadata)

    def save_state(self, stopped: str = "") -> None:
        """Save everything the next epoch depends on,
        so that --resume continues exactly from here."""
        self.stopped = stopped
        if self.comm.rank == 0:
            self.folder.save_state(self.model, self.optimizer, settings_of(self.settings),
                                   epoch=self.epoch, schedule=self.schedule, history=self.history,
                                   noise=self.noise, stopped=stopped, **self.metadata)


def load_model(path, build, device=False):
    """The model saved in ``path``: built by ``build(input_shape)`` for the shape it was trained on,
    then loaded, in evaluation mode (``model.train()`` before training it further).

    ``device``: True for the GPU, or a function that moves the model (``settings.to_device``)."""
    if not (isinstance(device, bool) or callable(device)):
        raise TypeError("load_model: device must be True, False or a function that moves the "
                        f"model (settings.to_device), got {device!r}")
    saved = checkpoint.read_metadata(path)
    model = build(tuple(saved["input_shape"])) if "input_shape" in saved else build()
    if callable(device):
        model = device(model)
    elif device:
        model = gpu(model)
    checkpoint.load(path, model)
    return model.eval()


def export_saved(settings: Settings, build) -> str:
    """``--export-onnx FILE``: the best model saved in the
    run folder, rebuilt by ``build(input_shape)``, as ONNX."""
    from .. import onnx  # the onnx package is an optional extra: imported only when exporting
    refuse_to_replace(settings.export_onnx, "--export-onnx")
    path = f"{settings.savepath}/{settings.checkpoint}"
    model = load_model(path, build)
    saved = checkpoint.read_metadata(path)
    kept = {key: json.dumps(value)
            for key, value in saved.items() if key in ("classes", "input_shape")}
    # class names, as JSON
    written = onnx.export(model, settings.export_onnx, saved["input_shape"], metadata=kept)
    log.info(f"Exported the model of {path} to {written} (ONNX opset {onnx.OPSET}, IR "
             f"version {onnx.IR_VERSION})")
    return written


def fit(model, data, val=None, *, optimizer=None, loss=logit_cross_entropy, schedule=None,
        augment=None, view=None, settings: Settings | None = None, val_name: str = "Validation",
        metadata: dict | None = None, **overrides) -> History:
    """Train ``model`` on ``data`` with every guarantee of a tinyflux run; return the history.

    Args:
        model: a network whose output is one score per class; or ``build(input_shape)`` that makes
            one for the data's (C, *S), called after the run folder is checked and the data is
            loaded.
        data: (images, labels), uint8 (N, [C,] *S) and integers (N,); or a function returning
            ((images, labels), val), called once the run folder has been checked.
        val: (images, labels) that choose the best model and drive the schedule (``val_name`` in
            the log); with ``val_split`` the held-out examples do that instead (``val`` is then left
            for a final test); with neither, the training data is scored.
        optimizer: an optimizer over ``model.parameters()``, or ``make(params)``; default Adam at
            lr.
        loss: ``loss(scores, labels)`` -> scalar Tensor.
        schedule: a :class:`Schedule`; default conv.jl's (:class:`ModelZoo`).
        augment: ``augment(x, rng)`` -> x, applied to every float32 training batch.
        view: ``view(images)`` -> images, applied once to examples held out by ``val_split``: the
            evaluation form of what ``augment`` changes (``ClipAugment.center``); ``val`` given is
            taken as it is.
        settings: a :class:`Settings` (an example's Args); ``overrides`` set its fields by name:
            ``fit(model, (x, y), epochs=5, savepath="runs/a", resume=True)``.
        metadata: plain values saved in every checkpoint (class names...).

    The run lives in ``savepath`` (locked, never overwritten unasked, resumable after every
    epoch); the best model is ``savepath/checkpoint``, which ``load_model`` reads back.
    """
    settings = settings or Settings(shuffle=True)
    settings = dataclasses.replace(settings, **overrides)
    settings.check()
    with Run(settings) as run:
        seed(settings.seed)
        (images, labels), val = data() if callable(data) else (data, val)
        check_examples(images, labels, "training data")
        if val is not None:
            check_examples(*val, val_name.lower() if val_name else "validation data")
        if settings.val_split:
            (images, labels), (held, held_labels) = split_validation(images, labels,
                                                                     settings.val_split,
                                                                     settings.seed)
            val, val_name = ((view(held) if view else held), held_labels), "Validation"
        elif val is None:
            val, val_name = ((view(images) if view else images), labels), "Training"
        input_shape = example_shape(val[0])  # what the model sees: after augmentation, as evaluated
        if not isinstance(model, Module):
            model = model(input_shape)
        elif run.saved is None:  # a model object may come trained: say what a new run does with it
            log.info(f"A new run in {settings.savepath}: epoch 1 and a new optimizer, from the "
                     "model's current weights (to continue a run of fit, pass resume=True)")
        model = settings.to_device(model)
        if settings.on_device():  # on the CPU the data stays as given (an h5py dataset, say)
            images, labels = settings.to_device(images), settings.to_device(labels)
            val = (settings.to_device(val[0]), settings.to_device(val[1]))
        # the data fits the model, before a long run
        classes = model(Tensor(to_float_images(val[0][:1]))).shape[-1]
        check_labels_fit(labels, classes, "training data", training=True)
        check_labels_fit(val[1], classes, f"{val_name.lower()} data", training=False)
        if optimizer is None or (callable(optimizer) and not isinstance(optimizer, Optimizer)):
            optimizer = (optimizer or (lambda params: Adam(params,
                                                           lr=settings.lr)))(model.parameters())
        schedule = schedule or ModelZoo()
        noise = RandomStream.for_run(settings)
        history = run.start(model, optimizer, schedule, noise, **(metadata or {}),
                            input_shape=list(input_shape))
        step = Step(model, loss, optimizer, run.comm, settings.graph)
        for epoch in run.epochs(settings.epochs):
            rng = noise.for_epoch(epoch)
            for x, y in run.batches(images, labels):
                run.record(step(augment(x, rng) if augment else x, y))
            mean_loss = run.end_epoch()
            with deferred_interrupt():
                acc = accuracy(*val, model, run.comm)
                log.info(f"[{epoch}]: {val_name} accuracy: {acc:.4f}")
                history.add(mean_loss, acc, optimizer.lr)
                if schedule.improved(acc):
                    run.save_best(epoch=epoch, accuracy=acc, lr=optimizer.lr)
                run.save_state(schedule.update(epoch, acc, optimizer))
    return history
