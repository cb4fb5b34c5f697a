"""What a run tells its user: the history, Flux-style
log lines, exit codes and the one-line Ctrl-C message.

Log lines look like Julia's (``[ Info: [3]: Test accuracy: 0.9871``), so a log
of a tinyflux run reads like the model zoo's. A command ends with an exit
status a shell script can test: 0 done, 1 the training diverged, 2 a run
folder, checkpoint or data set that cannot be used, 130 interrupted (Ctrl-C,
the shell's code for SIGINT), each after one line that says why; an
interrupted run also says how to continue it.
"""
from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass, field

from .. import distributed
from ..checkpoint import CheckpointError, read_metadata
from ..data import DatasetError
from .runs import DivergedError, RunFolder, RunFolderError

log = logging.getLogger("tinyflux.train")
INTERRUPT_GRACE_S = 5.0  # how long the other ranks of a job wait for rank 0 to report an interrupt


@dataclass
class History:
    """What a run saw, one entry per epoch (for the pictures, and returned by ``fit``)."""

    train_loss: list = field(default_factory=list)  # mean training loss of the epoch
    # measured after the epoch (test or validation set)
    test_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)  # learning rate used during the epoch

    @property
    def best_accuracy(self) -> float:
        return max(self.test_accuracy, default=0.0)

    def add(self, loss: float, accuracy: float, lr: float) -> None:
        self.train_loss.append(loss)
        self.test_accuracy.append(accuracy)
        self.lr.append(lr)


class FluxStyle(logging.Formatter):
    """Log lines like Julia's: "[ Info: ...", "[ Warning: ..."."""

    def format(self, record):
        level = {"INFO": "Info", "WARNING": "Warning",
                 "ERROR": "Error"}.get(record.levelname, record.levelname)
        return f"[ {level}: {record.getMessage()}"


def setup_logging(settings):
    """Log in Flux's style to stderr; with several
    ranks, only rank 0 logs (the others only errors)."""
    handler = logging.StreamHandler()
    handler.setFormatter(FluxStyle())
    logging.basicConfig(level=logging.INFO if is_rank_zero(settings) else logging.ERROR,
                        handlers=[handler])
    return settings


def is_rank_zero(settings) -> bool:
    """Whether this process logs, tests and draws: always,
    unless it is a rank other than 0 of a distributed job."""
    return not settings.distributed or distributed.init().rank == 0


def run_command(main, settings) -> int:
    """Run ``main(settings)`` as a command: an expected
    failure ends with one line and an exit status.

    Use as ``sys.exit(run_command(main, setup_logging(parse(...))))``.
    """
    comm = distributed.init() if settings.distributed else distributed.Communicator()
    try:
        main(settings)
        return 0
    except KeyboardInterrupt:
        # mpiexec hands Ctrl-C to every rank. Rank 0 says what was saved and
        # ends the job; the others give it time to (ending the job at once would
        # cut its line off), and say it themselves if it cannot (a rank waiting
        # inside a collective runs no Python until the collective returns).
        if comm.rank > 0:
            time.sleep(INTERRUPT_GRACE_S)
        log.error(interrupted_message(settings, comm.size))
        status = 130
    except DivergedError as error:
        log.error(str(error))
        status = 1
    except (RunFolderError, CheckpointError, DatasetError) as error:
        log.error(str(error))
        status = 2
    # the other ranks may be waiting for this one in a collective: end them all now
    if comm.size > 1:
        comm.abort(status)
    return status


def interrupted_message(settings, ranks: int = 1) -> str:
    """What was saved, and the command that continues the
    run (with mpiexec in front for a job of ``ranks``)."""
    run = RunFolder(settings.savepath, settings.checkpoint)
    try:
        epoch = read_metadata(run.state)["epoch"]
    except (CheckpointError, KeyError):
        return f"Interrupted before the first epoch ended: nothing was saved in {settings.savepath}"
    flags = [flag for flag in sys.argv[1:] if flag not in ("--resume", "--force")]
    launcher = ["mpiexec", "-n", str(ranks), "python", "-m", "mpi4py"] if ranks > 1 else ["python"]
    command = " ".join(shlex.quote(word) for word in [*launcher, sys.argv[0], *flags, "--resume"])
    return (f"Interrupted: the run is saved after epoch {epoch} in {run.state}. "
            f"To continue it: {command}")
