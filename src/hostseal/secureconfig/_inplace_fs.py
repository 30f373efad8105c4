"""The file-system work under :mod:`~.inplace`: checking a path on disk, wiping plaintext,
empty placeholders, the live tree on a tmpfs, and bind mounts.

The live tree is the boot-time restore directory (``/run/hostseal/config``); the live copy of
an adopted path ``/etc/ssh/ssh_host_ed25519_key`` is
``/run/hostseal/config/.hostseal-adopted/root/etc/ssh/ssh_host_ed25519_key``, bind-mounted over
the original path. ``.hostseal-adopted/saved.sha256`` in the live tree holds the digest of the
adopted set as last sealed, so that ``config status`` and ``config autobackup`` can tell unsaved
changes without the TPM.

Edge: reads and writes the disk and /run, mounts (``mount(2)`` through libc).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hostseal.fsutil import atomic_write, fsync_dir
from hostseal.secureconfig.adopted import (
    ADOPTED,
    MANIFEST_PARTS,
    Adopted,
    AdoptedPath,
    AdoptRefused,
    manifest_bytes,
    parse_manifest,
    rebase,
)
from hostseal.secureconfig.archive import Entry, build, collect, unpack_to
from hostseal.secureconfig.errors import SecureConfigError

SAVED_DIGEST = "saved.sha256"
_MS_BIND = 4096
_MNT_DETACH = 2
_WIPE_CHUNK = 1 << 20


class MountFailed(SecureConfigError):
    """A bind mount of a live copy over its original path could not be made or removed."""


# -- a path on disk -----------------------------------------------------------------------


def disk_kind(path: str) -> str:
    """``"file"`` or ``"dir"`` for a path that may be adopted; raises :class:`AdoptRefused`
    for a missing path, a symlink (or a symlink on the way to it), anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise AdoptRefused(
            f"{path} does not exist.", "Check the path; nothing was changed."
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise AdoptRefused(
            f"{path} is a symlink (to {os.readlink(path)!r}): the bind mount would follow it out.",
            "Adopt the path it points to instead; nothing was changed.",
        )
    if os.path.realpath(path) != path:
        raise AdoptRefused(
            f"{path} lies behind a symlink (it is really {os.path.realpath(path)}).",
            "Adopt the real path; nothing was changed.",
        )
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    raise AdoptRefused(
        f"{path} is not a regular file or a directory.", "Adopt files and directories only."
    )


def mount_points() -> set[str]:
    """The mount points of this mount namespace (``/proc/self/mountinfo``)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        field = line.split()[4]
        points.add(field.encode().decode("unicode_escape"))  # "\040" is a space
    return points


# -- wiping and placeholders ----------------------------------------------------------------


def _wipe_file(fd: int) -> None:
    """Overwrite a regular file's bytes with zeros, sync, and truncate it to empty."""
    size = os.fstat(fd).st_size
    zeros = bytes(min(size, _WIPE_CHUNK))
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left:
        left -= os.write(fd, zeros[: min(left, len(zeros))])
    os.fsync(fd)
    os.ftruncate(fd, 0)
    os.fsync(fd)


def _wipe_tree(directory: str) -> None:
    """Wipe every regular file below ``directory`` and remove everything in it (not itself)."""
    for top, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(top, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    _wipe_file(fd)
                finally:
                    os.close(fd)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    fsync_dir(Path(directory))


def wipe(path: AdoptedPath) -> None:
    """Leave only an empty placeholder at ``path``: a file's bytes overwritten with zeros then
    truncated, a directory's files wiped and its contents removed. The inode stays (owner and
    mode of the mount point do not matter: the bind mount covers them)."""
    try:
        if path.kind == "file":
            fd = os.open(path.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _wipe_file(fd)
            finally:
                os.close(fd)
        else:
            _wipe_tree(path.path)
    except OSError as exc:
        raise SecureConfigError(
            f"{path.path} is sealed, but its plaintext could not be removed from the disk: "
            f"{exc.strerror} ({exc.filename}).",
            f"Fix the cause, then run hostseal config adopt {path.path} again to finish.",
        ) from None


def placeholder_state(path: AdoptedPath) -> str:
    """``missing``, ``empty`` (a placeholder), ``content`` (plaintext on disk) or
    ``wrong-kind``, as seen in this mount namespace."""
    try:
        st = os.lstat(path.path)
    except FileNotFoundError:
        return "missing"
    if path.kind == "file" and stat.S_ISREG(st.st_mode):
        return "empty" if st.st_size == 0 else "content"
    if path.kind == "dir" and stat.S_ISDIR(st.st_mode):
        return "content" if os.listdir(path.path) else "empty"
    return "wrong-kind"


def make_placeholder(path: AdoptedPath) -> None:
    """Create an empty file (0600) or directory (0700) at ``path``, parents 0755 as needed."""
    parent = os.path.dirname(path.path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if path.kind == "file":
        os.close(os.open(path.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    else:
        os.mkdir(path.path, 0o700)
    fsync_dir(Path(parent))


def read_disk(path: AdoptedPath) -> list[Entry]:
    """What is at ``path`` on disk, as archive members under its adopted name."""
    return collect({path.member_name: Path(path.path)}, owners=True, files=True)


# -- the live tree --------------------------------------------------------------------------


def live_path(live: Path, path: AdoptedPath) -> Path:
    return live.joinpath(*path.member_parts)


def live_paths(live: Path) -> list[AdoptedPath] | None:
    """The adopted paths of the live tree (``None``: nothing was restored there)."""
    try:
        raw = live.joinpath(*MANIFEST_PARTS).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(live, exc) from None
    return parse_manifest(raw)


def _unreadable(live: Path, exc: OSError) -> SecureConfigError:
    return SecureConfigError(
        f"Cannot read the live tree {live}: {exc.strerror}.",
        "Run as root (it is readable only by root), or give --live the restore directory.",
    )


def read_live(live: Path, paths: Sequence[AdoptedPath]) -> Adopted:
    """The live copies of ``paths`` (those present) as an adopted set."""
    found = [p for p in paths if os.path.lexists(live_path(live, p))]
    sources = {p.member_name: live_path(live, p) for p in found}
    entries = collect(sources, owners=True, files=True) if sources else []
    return Adopted(list(found), entries)


def _owners() -> bool:
    return os.geteuid() == 0


def put_live(live: Path, path: AdoptedPath, entries: Sequence[Entry]) -> None:
    """Place ``path``'s live copy (``entries``) in the live tree, replacing any older copy."""
    live.joinpath(ADOPTED).mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".put-", dir=live.joinpath(ADOPTED)))
    try:
        mini = rebase(entries, path.member_parts, ("x",))
        unpack_to(build(mini), scratch / "t", owners=_owners())
        target = live_path(live, path)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        drop_live(live, path)
        os.rename(scratch / "t" / "x", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def drop_live(live: Path, path: AdoptedPath) -> None:
    target = live_path(live, path)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


def write_live_manifest(live: Path, adopted: Adopted) -> None:
    """The live tree's manifest and saved digest, after ``adopted`` was sealed."""
    top = live.joinpath(ADOPTED)
    top.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(live.joinpath(*MANIFEST_PARTS), manifest_bytes(adopted.paths))
    atomic_write(top / SAVED_DIGEST, adopted.digest().encode() + b"\n")


def saved_digest(live: Path) -> str | None:
    try:
        return live.joinpath(ADOPTED, SAVED_DIGEST).read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(live, exc) from None


def write_back(path: AdoptedPath, entries: Sequence[Entry]) -> None:
    """Put ``path`` back on disk from ``entries``, atomically: unpacked next to it, synced, then
    renamed over the placeholder (an empty directory is replaced by rename too)."""
    parent = os.path.dirname(path.path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(path.path)}.", dir=parent)
    try:
        mini = rebase(entries, path.member_parts, ("x",))
        unpack_to(build(mini), Path(scratch) / "t", owners=_owners())
        new = os.path.join(scratch, "t", "x")
        _fsync_tree(new)
        try:
            os.replace(new, path.path)
        except OSError as exc:
            raise AdoptRefused(
                f"{path.path} could not be put back: {exc.strerror} (the placeholder on disk is "
                "not empty, or is of another kind).",
                f"Move {path.path} aside and run hostseal config release again.",
            ) from None
        fsync_dir(Path(parent))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fsync_tree(top: str) -> None:
    paths = [top]
    if os.path.isdir(top):
        for where, dirs, files in os.walk(top):
            paths += [os.path.join(where, n) for n in dirs + files]
    for p in paths:
        if os.path.islink(p):
            continue
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- bind mounts ----------------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def bind(source: Path, target: str) -> None:
    """Bind-mount ``source`` (the live copy) over ``target`` (the placeholder)."""
    if _libc().mount(os.fsencode(source), os.fsencode(target), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise MountFailed(
            f"Could not bind-mount the live copy over {target}: {os.strerror(err)}.",
            "Run as root (the boot unit does); check that the placeholder exists and is of "
            "the same kind (file or directory) as the adopted path.",
        )


def unbind(target: str) -> None:
    """Remove the bind mount at ``target`` (lazily, if something still holds it open)."""
    if _libc().umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise MountFailed(
            f"Could not unmount the live copy at {target}: {os.strerror(err)}.",
            "Run as root; check with findmnt what is mounted there.",
        )
