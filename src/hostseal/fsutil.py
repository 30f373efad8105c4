"""Atomic, durable file writes: a crash at any point leaves the old or the new file, whole.

The recipe: a temporary file in the same directory (created with ``O_EXCL`` and its final mode
before any byte is written), every byte written, ``fsync``, ``os.replace`` over the target,
``fsync`` of the directory so the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    directory = path.parent
    tmp = directory / f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow what was asked
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)


def remove_stale_temps(directory: Path, name: str) -> None:
    """Remove temporaries a crashed writer of ``directory/name`` left behind."""
    for stale in directory.glob(f"{TEMP_PREFIX}{name}.*"):
        with contextlib.suppress(OSError):
            stale.unlink()
