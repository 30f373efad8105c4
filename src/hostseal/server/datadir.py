"""The server's data directory: private to the server's user.

The directory is created with mode 0700; an existing one that other users can read, write or
enter (any group or other permission bit) is refused before anything in it is read or created,
as the server key file is (:mod:`hostseal.server.serverkey`). The SQLite database is created
with mode 0600 before SQLite opens it: SQLite gives its ``-wal`` and ``-shm`` files the mode of
the database file, so they are 0600 too, whatever the umask. An existing database file (or WAL,
SHM) with a looser mode is tightened to 0600 at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from hostseal.errors import HostsealError

log = logging.getLogger("hostseal.server")

DIR_MODE = 0o700
FILE_MODE = 0o600
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class DataDirTooOpen(HostsealError):
    """The data directory is readable (or writable, or searchable) by other users."""


class DataDirMissing(HostsealError):
    """A command that works on an existing server's data directory was given one that does not
    exist (only ``hostseal server run`` creates it)."""


def require_existing(data_dir: Path) -> None:
    """Raise :class:`DataDirMissing` if ``data_dir`` does not exist (nothing is created)."""
    try:
        data_dir.lstat()
    except FileNotFoundError:
        raise DataDirMissing(
            f"The server's data directory {data_dir} does not exist; nothing was created.",
            f"Start the server once to create it (hostseal server run --data-dir {data_dir}), "
            "or give the existing one with --data-dir DIR (or HOSTSEAL_SERVER_DATA).",
        ) from None
    except OSError:
        pass  # unusable in another way: reported where it is used


def prepare(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) or check that an existing one is private; raise
    :class:`DataDirTooOpen` otherwise."""
    try:
        info = data_dir.stat()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(data_dir, DIR_MODE)  # exactly 0700, whatever the umask
        return
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise DataDirTooOpen(
            f"The server's data directory {data_dir} is readable by other users "
            f"(mode {mode:04o}); it holds the database, the escrow server key and the TLS keys.",
            f"Restrict it: chmod 700 {data_dir}.",
        )


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other databases and in-memory SQLite)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    name = url[len(prefix) :].split("?", 1)[0]
    if not name or name == ":memory:":
        return None
    return Path(name)


def private_sqlite(url: str) -> None:
    """Create the SQLite file of ``url`` with mode 0600 if it does not exist; tighten an
    existing one (and its WAL, SHM, journal) to 0600."""
    path = sqlite_path(url)
    if path is None:
        return
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask
        finally:
            os.close(fd)
    for suffix in _SQLITE_SUFFIXES:
        file = path.with_name(path.name + suffix)
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode != FILE_MODE:
            os.chmod(file, FILE_MODE)
            log.warning("%s had mode %04o; it is now 0600.", file, mode)
