"""Writing files so that a crash never leaves a half-written file under the real name.

A file is written under a temporary name in the same folder, forced to disk,
then renamed over the real name in one step (``os.replace``, atomic on POSIX
and Windows): a reader sees the old file or the new one, never a mixture.

The temporary name is ``.<name>.<pid>.<random>.part``. A process killed
mid-write (kill -9, power loss) cannot delete its own temporary file; the
process id in the name lets a later writer tell such leftovers (their
process is gone) from a write still in progress (:func:`remove_stale_parts`).
Cached arrays carry the SHA-256 of their values (:func:`checked_npz_bytes`), so that a damaged cache
file is found and recomputed, never used (:func:`read_checked_npz`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import signal
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

PART_SUFFIX = ".part"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` to
    write; on success it replaces ``path`` in one step.

    When the block ends normally the bytes are forced to disk (fsync) and the
    file is renamed over ``path``. When the block raises, the temporary file
    is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{_short(path.name)}.{os.getpid()}.",
                                suffix=PART_SUFFIX)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())  # on disk before the rename makes it visible
        # mkstemp creates 0600; give it the permissions of an ordinary file
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _short(name: str, most: int = 200) -> str:
    """``name`` itself, or its start and end around a "~" when the temporary
    name would pass the 255-byte limit of most file systems; the end (with
    the suffix) stays, so that :func:`remove_stale_parts` still matches it."""
    if len(name.encode()) <= most:
        return name
    return name[:most // 2] + "~" + name[-(most // 2 - 1):]


def write_bytes_atomically(path, data: bytes) -> None:
    """``Path(path).write_bytes(data)``, but all or nothing (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as out:
        out.write(data)


class WriteError(OSError):
    """A file could not be written; the message names
    the file (not its temporary name) and the cause."""


def write_file(path, data: bytes, what: str) -> Path:
    """:func:`write_bytes_atomically` for a file a
    user named (``what`` says which: "ONNX model"...).

    Failures become a :class:`WriteError` that names ``path`` itself,
    says why in words and that any earlier file under that name is
    unchanged, instead of an OSError naming the temporary file or none."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise WriteError(f"{path}: is a folder; give the {what} a file name")
    if any(parent.exists() and not parent.is_dir() for parent in path.parents):
        raise WriteError(f"{path}: cannot write the {what} there: "
                         f"{next(p for p in path.parents if p.exists() and not p.is_dir())} "
                         "is a file, not a folder")
    try:
        write_bytes_atomically(path, data)
    except OSError as error:
        cause = error.strerror or str(error) or "no reason given"
        raise WriteError(f"{path}: could not write the {what}: {cause} ({type(error).__name__}); "
                         "any earlier file under that name is unchanged") from error
    return path


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists is checked
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:  # not POSIX: assume it may be alive rather than delete a file in use
        return True
    return True


def remove_stale_parts(folder, target_suffix: str = "") -> list[Path]:
    """Delete the temporary files of writes into ``folder`` whose process has died; return them.

    Only names of the form ``.<name>.<pid>.<random>.part`` (and the form without
    a pid that older versions wrote) whose ``<name>`` ends with ``target_suffix``
    are considered, so other programs' files are never touched.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(PART_SUFFIX)) or not entry.is_file():
            continue
        # <name>.<pid>.<random>, or <name>.<random> from older versions
        stem = name[1:-len(PART_SUFFIX)]
        target, _, rest = stem.rpartition(".")  # drop <random>
        target, _, pid = target.rpartition(".")
        if pid.isdigit():
            if _process_alive(int(pid)):
                continue
        else:
            target = stem.rpartition(".")[0]  # the older form had no pid: its writer is long gone
        if not target.endswith(target_suffix):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


class ChecksumError(ValueError):
    """A cached file whose values are not those it was written with."""


def _digest(arrays: list) -> str:
    """The SHA-256 of the arrays' bytes, one after another (of one array: of its bytes)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def checked_npz_bytes(name: str, array: np.ndarray, **more: np.ndarray) -> bytes:
    """An .npz file's bytes holding ``array`` under ``name`` (and the arrays of ``more`` under
    theirs) and the SHA-256 of all their values, for a cache."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: array}, **more, sha256=np.array(_digest([array, *more.values()])))
    return buffer.getvalue()


def _refuse_oversized_members(path) -> None:
    """ValueError when an array in the .npz claims more bytes than the file holds for it.

    NumPy allocates the shape an .npy header claims before it reads the values, so a damaged or
    crafted header (a shape of 10^12 values in a file of a few bytes) would otherwise ask for
    terabytes of memory; an honest header's shape is never larger than its data.
    """
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                               np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > info.file_size:
                    raise ValueError(f"{info.filename} claims {shape} {dtype} ({claimed} bytes) in "
                                     f"{info.file_size} bytes")


def read_checked_npz(path, name: str, *more: str):
    """The array that :func:`checked_npz_bytes` stored in ``path`` under ``name`` (with ``more``
    names: a tuple of the arrays); FileNotFoundError when there is none, ValueError when the file is
    damaged, ChecksumError (a ValueError) when its values fail their checksum."""
    try:
        _refuse_oversized_members(path)
        with np.load(path) as stored:
            arrays, digest = [stored[key] for key in (name, *more)], str(stored["sha256"])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None
    if _digest(arrays) != digest:
        raise ChecksumError("the values fail their checksum")
    return tuple(arrays) if more else arrays[0]


@contextlib.contextmanager
def deferred_interrupt():
    """Hold back Ctrl-C (SIGINT) while the block runs, then raise KeyboardInterrupt after it.

    A file is written atomically anyway; ``tf.save`` runs in this block so that
    a Ctrl-C during it is not lost (landing in one of h5py's cleanup callbacks,
    Python prints it and goes on), and a training loop wraps the *pair* of
    saves at the end of an epoch (best model, then state) in it, so that an
    interrupted run has either both or neither. Outside the main thread Python
    delivers no signals, and the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        # no signals here, or SIGINT is ignored anyway (a background job): nothing to hold back
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:  # now do what SIGINT would have done: Python's handler raises KeyboardInterrupt
        if callable(previous):
            previous(signal.SIGINT, None)
        else:  # SIG_DFL: end the process as the signal would have
            os.kill(os.getpid(), signal.SIGINT)
