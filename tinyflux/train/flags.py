"""Settings as a dataclass, and the command line made from
it: each flag, its default and its help written once.

A field written with :func:`flag` carries its help text (and, for some, the
allowed values) in the field's metadata; :func:`parse` turns every field into
an ``argparse`` option (``batch_size`` becomes ``--batch-size``), reads the
command line and returns an instance of the dataclass. The type of the flag
comes from the field's annotation: ``int``, ``float``, ``str``, ``X | None``
(the flag may be left unset), and ``bool`` (a switch: ``--shuffle``, or
``--shuffle``/``--no-shuffle`` when the default is on).

Why a few lines over ``dataclasses.fields`` rather than a library such as
``tyro`` or ``simple-parsing``: the whole mechanism stays readable here, it
adds no dependency, and a learner sees that a flag is nothing more than a
dataclass field with a help text.

:class:`Settings` holds the fields that every training run has (device,
seed, savepath, resume...) with the checks that refuse a bad value before a
long run starts; an example's own ``Args`` subclasses it and adds or
redefines its fields.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass

from .. import distributed, plots
from ..backends import cupy_available, dpnp_module
from ..device import (DEVICE_ALIASES, TORCH_PREFIX, cpu, gpu, gpu_advice, to_device, torch_device,
                      xpu)


def flag(default, help: str, *, choices: list | None = None, resumable: bool = False,
         metavar: str | None = None):
    """A dataclass field that is also a command-line flag.

    ``resumable=True`` marks a setting that may change when a run is resumed
    (it does not change what the run computes: the number of epochs, the folder,
    the device...); every other setting must stay as the run was started.
    """
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices, "resumable": resumable,
                                       "metavar": metavar})


def _flag_type(annotation) -> tuple[type, bool]:
    """(the value's type, whether None is allowed) from a field's annotation, such as
    ``int | None``."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        optional, annotation = True, members[0]
    return annotation, optional


def make_parser(settings_class: type, description: str) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one option per field of the dataclass ``settings_class``."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
        meta = field.metadata
        if "help" not in meta:
            continue  # a field that is not a flag
        name = "--" + field.name.replace("_", "-")
        kind, _ = _flag_type(hints[field.name])
        if kind is bool:
            # a switch that is on, or decided later (None), can be turned off: --no-augment
            action = "store_true" if field.default is False else argparse.BooleanOptionalAction
            parser.add_argument(name, action=action, default=field.default, help=meta["help"])
        else:
            parser.add_argument(name, type=kind, default=field.default, help=meta["help"],
                                choices=meta["choices"], metavar=meta["metavar"])
    return parser


def parse(settings_class: type, description: str, argv: list[str] | None = None):
    """Read the command line (``sys.argv`` by default) into
    a ``settings_class``; exit with a message on bad values.

    After parsing, ``settings.check()`` runs if the class has it: a ValueError
    there becomes the usual argparse error (exit status 2, the usage line).
    """
    parser = make_parser(settings_class, description)
    settings = settings_class(**vars(parser.parse_args(argv)))
    try:
        if hasattr(settings, "check"):
            settings.check()
    except ValueError as error:
        parser.error(str(error))
    return settings


def settings_of(settings) -> dict:
    """The values that shape a run's results: every field not marked ``resumable``, by name."""
    return {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)
            if not field.metadata.get("resumable", False)}


@dataclass
class Settings:
    """What every training run is told: these fields are
    flags of each example, and the keywords of ``fit``."""

    lr: float = flag(1e-3, "learning rate of Adam")
    epochs: int = flag(10, "passes over the training set", resumable=True)
    batch_size: int = flag(32, "examples per training step")
    savepath: str = flag("./", "folder of the run: the best model and the run state",
                         resumable=True)
    checkpoint: str = flag("model.h5", "file name of the best model in --savepath", resumable=True)
    device: str = flag("auto",
                       "auto: a CUDA GPU when CuPy finds one, else the CPU; cpu; gpu (CuPy); xpu "
                       "(an Intel GPU through dpnp); mps (Apple's GPUs through PyTorch); "
                       "torch:NAME for any of PyTorch's devices (torch:cuda also on AMD with "
                       "PyTorch's ROCm build, torch:xpu, torch:cpu)", resumable=True)
    seed: int = flag(0,
                     "seed for the initial weights, the noise, the shuffling "
                     "and the validation split")
    shuffle: bool = flag(False, "shuffle the training set every epoch")
    max_steps: int | None = flag(None, "stop each epoch after this many batches (quick runs)")
    val_split: float = flag(0.0,
                            "hold out this fraction of the training set to choose the checkpoint "
                            "and drive the schedule; the test set is then scored once, at the end",
                            metavar="FRACTION")
    graph: bool = flag(False,
                       "GPU only: record one training step as a CUDA graph "
                       "and replay it (tf.capture)", resumable=True)
    distributed: bool = flag(False,
                             "train as one of the ranks of an MPI job: mpiexec -n 2 python -m "
                             "mpi4py SCRIPT --distributed (needs pip "
                             "install 'tinyflux[mpi]' mpich)", resumable=True,)
    plots: str | None = flag(None, "write PNG pictures of the run into DIR (pip "
                                   "install 'tinyflux[plot]')", resumable=True, metavar="DIR")
    resume: bool = flag(False, "continue the run in --savepath after its last "
                               "completed epoch (same flags)", resumable=True)
    export_onnx: str | None = flag(None,
                                   "write the model saved in --savepath to FILE as ONNX, instead "
                                   "of training (pip install 'tinyflux[onnx]')", resumable=True,
                                   metavar="FILE")
    force: bool = flag(False,
                       "start over in a --savepath that holds an earlier run, deleting its files",
                       resumable=True)

    def on_gpu(self) -> bool:
        """Whether this run uses a GPU through CuPy: --device gpu, or auto where CuPy finds one."""
        if self.device == "gpu" and not cupy_available():
            raise ValueError(f"--device gpu: no usable CUDA GPU through CuPy. {gpu_advice()}")
        return self.device == "gpu" or (self.device == "auto" and cupy_available())

    def on_torch(self) -> str | None:
        """The ``torch:NAME`` device of this run (--device
        mps is torch:mps), None when it uses no PyTorch."""
        device = DEVICE_ALIASES.get(self.device, self.device)
        if not device.startswith(TORCH_PREFIX):
            return None
        try:
            torch_device(device)  # PyTorch installed, and the device answers
        except RuntimeError as error:
            raise ValueError(f"--device {self.device}: {error}") from None
        return device

    def on_xpu(self) -> bool:
        """Whether this run uses dpnp's SYCL device (an
        Intel GPU): --device xpu, never chosen by auto."""
        if self.device == "xpu" and dpnp_module() is None:
            raise ValueError("--device xpu: dpnp is not installed or finds no SYCL device "
                             "(pip install 'tinyflux[xpu]')")
        return self.device == "xpu"

    def on_device(self) -> bool:
        """Whether this run's arrays live off NumPy: on a GPU, or on any of PyTorch's devices."""
        return self.on_gpu() or self.on_xpu() or self.on_torch() is not None

    def to_device(self, obj):
        """``obj`` (arrays, a model) moved to this run's
        device: tf.to_device, tf.xpu, tf.gpu or tf.cpu."""
        if self.on_torch():
            return to_device(obj, self.on_torch())
        return xpu(obj) if self.on_xpu() else gpu(obj) if self.on_gpu() else cpu(obj)

    def check(self) -> None:
        """Refuse values that would fail later, before
        a long run starts (ValueError naming the flag)."""
        steps_ok = self.max_steps is None or self.max_steps >= 1
        if self.batch_size < 1 or self.epochs < 1 or not steps_ok:
            raise ValueError("--batch-size, --epochs and --max-steps must be at least 1, got "
                             f"{self.batch_size}, {self.epochs}, {self.max_steps}")
        if not 0 <= self.val_split < 1:
            raise ValueError(f"--val-split: a fraction in [0, 1) expected, got {self.val_split}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"--lr: a positive finite learning rate expected, got {self.lr}")
        if not self.checkpoint or os.path.basename(self.checkpoint) != self.checkpoint or \
                self.checkpoint in (".", ".."):
            raise ValueError("--checkpoint: a file name inside --savepath expected, such as "
                             f"model.h5; got {self.checkpoint!r}")
        if not self.savepath:
            raise ValueError("--savepath: a folder expected (./ for the current "
                             "one); got an empty string")
        if self.resume and self.force:
            raise ValueError("--resume and --force exclude each other: --resume continues the "
                             "earlier run, --force deletes it")
        ranks = distributed.launched_by_mpi()
        if ranks > 1 and not self.distributed:
            raise ValueError(f"started as one of {ranks} ranks by mpiexec, but without "
                             "--distributed: each rank would train alone, into the same folder. "
                             "Add --distributed, or start one process")
        if self.distributed and self.graph:
            raise ValueError("--graph with --distributed: not supported until "
                             "it has been tested on GPUs")
        if self.plots is not None and not plots.available():
            raise ValueError(f"--plots: {plots.MISSING}")
        known = ("auto", "cpu", "gpu", "xpu", *DEVICE_ALIASES)
        if self.device not in known and not self.device.startswith(TORCH_PREFIX):
            raise ValueError(f"--device: one of {', '.join(known)} or torch:NAME "
                             f"expected, got {self.device!r}")
        self.on_gpu()  # --device gpu without a GPU
        self.on_xpu()  # --device xpu without dpnp
        self.on_torch()  # --device torch:NAME without PyTorch or without that device
        if self.distributed and (self.device == "xpu" or self.on_torch()):
            raise ValueError(f"--distributed with --device {self.device}: not supported (its "
                             "collectives are MPI on the host or NCCL on CUDA GPUs through CuPy)")
        if self.graph and (self.device in ("cpu",
                                           "xpu") or self.on_torch() or not cupy_available()):
            where = ("an Intel GPU through dpnp" if self.device == "xpu" else
                     f"{self.on_torch()} through PyTorch" if self.on_torch() else "the CPU")
            raise ValueError(f"--graph: CUDA graphs need a CUDA GPU, and this run is on {where} "
                             f"(--device {self.device})")
