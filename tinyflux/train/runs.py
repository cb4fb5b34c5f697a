"""Run folders: one training run per folder, its whole state saved after every epoch, resumable.

A training run that takes minutes or hours needs three promises from the
folder it writes into, and this module keeps them for every run of
``tinyflux.train`` (``Run`` and ``fit`` use it):

1. **Nothing is replaced without being asked.** A folder that already holds
   another run's files is refused (:meth:`RunFolder.prepare`) unless the
   caller says to continue that run (``resume``) or to start over (``force``).
2. **One run at a time.** While a run uses a folder it holds a lock on the
   file ``tinyflux.lock`` there (an operating-system lock, ``flock``, which
   the kernel releases when the process ends in any way, even ``kill -9``).
   A second run is refused with the first one's process id; a lock file left
   by a process that has died is taken over.
3. **An interruption loses at most one epoch.** After every epoch the loop
   saves its *whole* state, not only the weights: the optimizer with every
   hyperparameter, the epoch, the best accuracy and when it was reached, the
   random generator's state and the history. From that file a resumed run
   continues exactly as if it had never stopped.

Files in a run folder (for a best-model file named ``mnist_conv.h5``):

    mnist_conv.h5        the best model so far (what test() and --predict load)
    mnist_conv.state.h5  the state after the last completed epoch (what --resume loads)
    tinyflux.lock        only while a run is going; holds its process id

Both .h5 files are written atomically (tf.save), so a crash during a save
leaves the previous version.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

try:
    import fcntl  # POSIX (Linux, macOS); on Windows runs are not locked
except ImportError:  # pragma: no cover - not reachable on the machines tinyflux is tested on
    fcntl = None

from .. import checkpoint
from ..files import deferred_interrupt  # noqa: F401 (part of tf.train, where loops use it)

log = logging.getLogger("tinyflux.train.runs")

LOCK_NAME = "tinyflux.lock"
STATE_SUFFIX = ".state.h5"
# what save_state writes
STATE_KEYS = ("epoch", "stopped", "settings", "schedule", "history", "noise_state")


class RunFolderError(Exception):
    """The run folder cannot be used as asked: another
    run's files, a run in progress, nothing to resume."""


class DivergedError(RuntimeError):
    """Training produced NaN or infinite numbers; the run stopped without saving that epoch."""


class RunFolder:
    """The files of one training run in ``folder``; ``best_name`` is the best model's file name.

    Use it as a context manager: entering takes the folder's lock, leaving releases it.

        with RunFolder("runs/a", "mnist_conv.h5") as run:
            settings = {"lr": 3e-3, "seed": 0}
            saved = run.prepare(resume=False, force=False, settings=settings)  # None: a new run
            ...
            run.save_best(model, opt, epoch=1, accuracy=0.98)
            run.save_state(model, opt, settings, epoch=1, schedule=schedule, history=history,
                           noise=noise)

    ``tf.train.Run`` does all this for a loop on one process or on every rank of a job.
    """

    def __init__(self, folder, best_name: str):
        if not best_name or Path(best_name).name != best_name or best_name in (".", ".."):
            raise ValueError("RunFolder: the checkpoint must be a plain file name such as "
                             f"'model.h5', got {best_name!r}")
        # "~/runs" is the home folder's, not a folder named "~"
        self.folder = Path(folder).expanduser()
        self.best = self.folder / best_name
        self.state = self.folder / (Path(best_name).stem + STATE_SUFFIX)
        self.lock_path = self.folder / LOCK_NAME
        self._lock_fd: int | None = None

    # -- the lock ----------------------------------------------------------------------------------
    def __enter__(self) -> "RunFolder":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the folder's lock, creating the folder;
        RunFolderError if another live run holds it."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"{self.folder}: cannot create the run folder "
                                 f"({error.strerror or error})") from None
        if fcntl is None:
            log.warning("runs are not locked on this system: make sure no other run uses %s",
                        self.folder)
            return
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:  # also the first sign of a folder we cannot write into
                raise RunFolderError(f"{self.folder}: cannot write into the run folder "
                                     f"({error.strerror or error})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_all(fd) or "another process"
                os.close(fd)
                raise RunFolderError(f"{self.folder} is in use by another run ({holder}); wait "
                                     "for it to end, or choose "
                                     "another folder (--savepath)") from None
            except OSError as error:  # a file system without locks (some network mounts)
                os.close(fd)
                log.warning("%s: cannot lock the run folder (%s): make sure no other run uses it",
                            self.folder, error.strerror or error)
                return
            # The last holder deletes the file as it lets go; if it did so
            # between our open() and flock(), we hold a lock on a deleted
            # file. Only a lock on the file that is at the path counts.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            left_behind = _read_all(fd)
            if left_behind:  # a holder that ended without releasing: killed, or the machine stopped
                log.warning("%s: taking over the lock left by a run that is no longer running (%s)",
                            self.folder, left_behind)
            os.ftruncate(fd, 0)
            os.write(fd,
                     f"process {os.getpid()} on "
                     f"{socket.gethostname()}: {' '.join(sys.argv)}".encode(),)
            self._lock_fd = fd
            return

    def release(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)  # before unlocking: see the inode check in acquire()
        os.close(self._lock_fd)  # closing the last descriptor releases the flock
        self._lock_fd = None

    # -- what is in the folder --------------------------------------------------------------------
    def earlier_files(self) -> list[Path]:
        """The files of an earlier run with this checkpoint name."""
        return [path for path in (self.best, self.state) if path.exists()]

    def prepare(self, resume: bool, force: bool, settings: dict) -> dict | None:
        """Decide how this run starts; return the saved state's metadata when resuming, else None.

        ``settings`` are the choices that shape the results (learning rate, batch
        size, seed...): a resumed run must use the same ones, so they are saved in
        the state and compared here. Call this before loading any data: every
        refusal comes at once.
        """
        if resume and force:
            raise RunFolderError("resume and force exclude each other: resume continues the "
                                 "earlier run, force deletes it")
        earlier = self.earlier_files()
        if resume:
            if not self.state.exists():
                raise RunFolderError(f"--resume: {self.folder} has no saved run state "
                                     f"({self.state.name}); it holds {self._without_state()}. "
                                     "Start a new run with --force (this deletes what is there) "
                                     "or choose another --savepath")
            metadata = checkpoint.read_metadata(self.state)
            missing = [key for key in STATE_KEYS if key not in metadata]
            if missing:
                raise RunFolderError(f"--resume: {self.state} is not a run state file: it lacks "
                                     f"{', '.join(missing)} (a model checkpoint copied over it?). "
                                     "Start a new run with --force, or put the "
                                     "run's own state file back")
            saved = json.loads(metadata["settings"])
            differences = [f"--{key.replace('_', '-')}: the run used "
                           f"{saved.get(key)!r}, now {value!r}"
                           for key, value in settings.items() if saved.get(key) != value]
            if differences:
                raise RunFolderError(f"--resume: the run in {self.folder} was made with other "
                                     "settings, so it "
                                     "cannot continue exactly:\n  " + "\n  ".join(differences))
            return metadata
        if earlier and not force:
            names = ", ".join(path.name for path in earlier)
            raise RunFolderError(f"{self.folder} already holds an earlier run ({names}). To "
                                 "continue it, add --resume; to start over and delete it, add "
                                 "--force; or choose another --savepath")
        for path in earlier:  # force: the caller asked for these to go
            path.unlink()
            log.info("--force: deleted %s of the earlier run", path)
        return None

    def _without_state(self) -> str:
        """What the folder holds when it has no run state: said so that the user knows why."""
        if not self.best.exists():
            return "no earlier run"
        try:
            epoch = checkpoint.read_metadata(self.best).get("epoch")
        except checkpoint.CheckpointError:
            epoch = None
        if isinstance(epoch, int):
            return (f"a best model saved after epoch {epoch} ({self.best.name}) but no state: the "
                    "save of the run state failed (a full disk, a folder that became read-only?) "
                    "or the run was stopped between the two saves. Free the space if needed; the "
                    "best model can still be tested")
        return (f"only a best model ({self.best.name}), from an older tinyflux or a run "
                "that never finished an epoch")

    def save_state(self, model, optimizer, settings: dict, *, epoch: int, schedule, history, noise,
                   stopped: str = "", **metadata) -> None:
        """Save everything a resumed run needs, in one file,
        atomically (see also :func:`deferred_interrupt`).

        The weights and the optimizer's whole state as arrays; as attributes the
        epoch just completed, why the run stopped ("" if it goes on), the
        ``settings`` it must keep, the schedule's state, the history, and the state
        of the noise generator (``noise.state()``; "" where it cannot be saved).
        """
        history_lists = {"train_loss": history.train_loss, "test_accuracy": history.test_accuracy,
                         "lr": history.lr}
        checkpoint.save(self.state, model, optimizer, epoch=epoch, stopped=stopped,
                        settings=json.dumps(settings, sort_keys=True),
                        schedule=json.dumps(schedule.state()), history=json.dumps(history_lists),
                        noise_state=noise.state(), **metadata)

    def load_state(self, model, optimizer) -> dict:
        """Load the saved weights and optimizer state into
        ``model`` and ``optimizer``; return the attributes."""
        return checkpoint.load(self.state, model, optimizer)

    def save_best(self, model, optimizer, **metadata) -> None:
        checkpoint.save(self.best, model, optimizer, **metadata)


def refuse_to_replace(path, flag: str) -> None:
    """A command writes a new file there, never over one
    that exists (a checkpoint given by mistake, say)."""
    if Path(path).expanduser().exists():
        raise RunFolderError(f"{flag} {path}: the file exists; give a new name, or delete it first")


def restore(saved: dict, schedule, history, noise) -> None:
    """Give the schedule, the history and the noise generator
    the state that :meth:`RunFolder.save_state` saved."""
    schedule.load_state(json.loads(saved["schedule"]))
    lists = json.loads(saved["history"])
    history.train_loss[:], history.test_accuracy[:], history.lr[:] = \
        lists["train_loss"], lists["test_accuracy"], lists["lr"]
    noise.load_state(saved["noise_state"])


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()
