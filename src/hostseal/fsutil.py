"""Atomic, durable file replacement: after a crash the file holds the old bytes or the new ones.

:func:`atomic_write` writes a temporary file in the target's directory, named
``.<name>.<pid>.<random>.hostseal-tmp`` and created with ``O_CREAT | O_EXCL`` and the final mode
before any data is written; it writes everything, ``fsync``\\ s the file, ``os.replace``\\ s it over
the target and ``fsync``\\ s the directory. On any failure the temporary file is removed.

A process killed with SIGKILL (or a power loss) can leave its temporary file behind; it never
harms the target. The next :func:`atomic_write` to the same target removes such leftovers whose
writer process no longer exists (a leftover of a live process, or of a reused PID, is left
alone), and :func:`remove_stale_temps` does it on demand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from hostseal.errors import HostsealError

TEMP_SUFFIX = ".hostseal-tmp"


class AtomicWriteFailed(HostsealError):
    """A file could not be replaced atomically; the previous content is still in place."""


def fsync_dir(path: Path) -> None:
    """``fsync`` the directory ``path`` so that renames and creations in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temporary files left for ``path`` by writers that no longer run; return them."""
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        middle = name[len(prefix) : -len(TEMP_SUFFIX)].split(".")
        if len(middle) != 2 or not middle[0].isdigit():
            continue
        pid = int(middle[0])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.parent / name)
            removed.append(path.parent / name)
    return removed


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file gets exactly ``mode``.

    Raises :class:`AtomicWriteFailed` if anything fails; the previous content of ``path`` (if
    any) is then still in place and no temporary file remains.
    """
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {mode:o} is not a permission mode")
    path = Path(path)
    directory = path.parent
    remove_stale_temps(path)
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
    created = replaced = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        created = True
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        replaced = True
        fsync_dir(directory)
    except OSError as exc:
        if not replaced:
            _discard(tmp, created)
            raise AtomicWriteFailed(
                f"Could not write {path}: {exc.strerror or exc}. Its previous content is "
                "unchanged.",
                f"Check free space and permissions in {directory}, then try again.",
            ) from exc
        raise AtomicWriteFailed(
            f"{path} was replaced, but the directory {directory} could not be synced to disk: "
            f"{exc.strerror or exc}. After a power loss it may hold its previous content.",
            "Check the file system and run the command again.",
        ) from exc
    except BaseException:
        if not replaced:
            _discard(tmp, created)
        raise


def _discard(tmp: Path, created: bool) -> None:
    if created:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
