"""Writing files so that a crash never leaves a half-written file under the real name."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` to write; on success it replaces ``path`` in one step.

    The temporary file lies in the same folder (a rename across file systems
    would not be atomic). When the block ends normally the bytes are forced to
    disk (fsync) and ``os.replace`` renames the file over ``path``: readers see
    the old file or the new one, never a mixture. When the block raises, the
    temporary file is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())  # on disk before the rename makes it visible
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; give it the permissions of an ordinary file
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
