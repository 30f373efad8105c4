"""The configuration archive (the plaintext of ``local.tgz.ve``): a deterministic pax tar.

It is not compressed: the archive is restored at every boot, and inflating it cost more than
everything else hostseal does in an unlock (10 MB: ~15 ms of gunzip against a 50 ms budget),
while the bytes saved are on a local disk. (ESXi's name ``local.tgz`` is kept for the file.)

Packing keeps names, file contents, permission bits (``mode & 0o7777``), directories and
symlinks that stay inside their source tree; it fixes mtime to 0 and owner to 0:0 with no names
(or keeps the numeric owner, for the paths adopted in place: :mod:`~.adopted`), and sorts
members by name, so the same trees give the same bytes. Device nodes, FIFOs, sockets,
absolute symlinks and symlinks leading out of their tree are refused. Hard links are stored as
separate regular files.

Unpacking checks every member before writing anything: relative names without ``.``/``..`` or
empty components, only files, directories and symlinks, no member below a file or a symlink,
symlinks that resolve (following the archive's own symlinks) inside the destination, a bounded
total size. It writes into a new or empty directory and never follows a symlink while writing:
symlinks are created last. With ``owners=True`` (the boot-time restore, run as root) every
member gets the numeric owner stored in the archive.

:func:`collect`, :func:`entries_of` and :func:`build` give the members as :class:`Entry`
values, so that an archive can be taken apart and put together again (the adopted paths are
kept across saves this way).

Edge: packing reads directory trees, unpacking writes one; the tar checks are on bytes.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hostseal.secureconfig._tarutil import (
    TAR_ERRORS,
    fixed_info,
    write_tar,
)
from hostseal.secureconfig.errors import PackRefused, UnpackRefused, UnsafeArchive

MAX_ARCHIVE_SIZE = 512 << 20
"""The largest configuration archive unpacked, uncompressed (512 MiB)."""
MAX_MEMBERS = 100_000
MAX_SYMLINK_HOPS = 40
_MAX_NAME = 4096
_MAX_PART = 255

Parts = tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    """One archive member: its name as parts, kind, permission bits, owner and content."""

    parts: Parts
    kind: str  # "dir" | "file" | "link"
    mode: int
    data: bytes = b""
    target: str = ""
    size: int = 0
    offset: int = 0
    source: str = ""
    uid: int = 0
    gid: int = 0

    @property
    def name(self) -> str:
        return "/".join(self.parts)


# --- names and symlinks --------------------------------------------------------------------


def _name_problem(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if name.startswith("/"):
        return "has an absolute path"
    if "\x00" in name or len(name) > _MAX_NAME:
        return "has an invalid name"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "has a '..', '.' or empty path component"
        if len(part) > _MAX_PART:
            return "has a path component longer than 255 characters"
    return None


def _resolve(start: Parts, target: str, links: Mapping[Parts, str]) -> Parts | None:
    """Where ``target`` (relative to directory ``start``) leads, following the archive's links.

    ``None`` when it leaves the root. Raises ``ValueError`` on a loop or too many hops.
    """
    if target.startswith("/"):
        return None
    pending = list(reversed([*start, *target.split("/")]))
    out: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        link = links.get(tuple(out))
        if link is not None:
            hops += 1
            if hops > MAX_SYMLINK_HOPS or link.startswith("/"):
                raise ValueError("symlink loop")
            out.pop()
            pending.extend(reversed(link.split("/")))
    return tuple(out)


def _tree_problems(entries: Sequence[Entry]) -> tuple[Entry, str] | None:
    """The first structural problem: duplicates, members below files/links, escaping links."""
    kinds: dict[Parts, str] = {}
    for entry in entries:
        if entry.parts in kinds:
            return entry, "appears twice"
        kinds[entry.parts] = entry.kind
    links = {e.parts: e.target for e in entries if e.kind == "link"}
    for entry in entries:
        for i in range(1, len(entry.parts)):
            if kinds.get(entry.parts[:i], "dir") != "dir":
                return entry, "lies below a file or a symlink"
        if entry.kind == "link":
            if not entry.target or "\x00" in entry.target or len(entry.target) > _MAX_NAME:
                return entry, "is a symlink with an invalid target"
            try:
                where = _resolve(entry.parts[:-1], entry.target, links)
            except ValueError:
                return entry, f"is a symlink loop ({entry.target!r})"
            if where is None:
                return entry, f"is a symlink that points outside the tree ({entry.target!r})"
    return None


# --- packing -------------------------------------------------------------------------------


def _sources(sources: Mapping[str, Path] | Sequence[Path]) -> list[tuple[Parts, Path]]:
    pairs = (
        list(sources.items()) if isinstance(sources, Mapping) else [(p.name, p) for p in sources]
    )
    roots: list[tuple[Parts, Path]] = []
    for prefix, path in pairs:
        prefix = prefix.strip("/")
        problem = _name_problem(prefix)
        if problem is not None:
            raise PackRefused(
                f"The archive name {prefix!r} for {path} {problem}.",
                "Name each source directory with a relative path such as 'etc/libvirt'.",
            )
        roots.append((tuple(prefix.split("/")), Path(path)))
    if not roots:
        raise PackRefused("No source directory was given.", "Name at least one directory.")
    return roots


def _refuse(path: Path, what: str) -> PackRefused:
    return PackRefused(
        f"{path} {what}; it cannot go into the configuration archive.",
        "Remove it from the source tree or leave its directory out of the sources.",
    )


def _read_regular(path: Path) -> tuple[bytes, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "changed into something other than a regular file while packing")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(), stat.S_IMODE(st.st_mode)
    finally:
        os.close(fd)


def _walk(
    root: Path, prefix: Parts, out: list[Entry], owners: bool = False, files: bool = False
) -> None:
    def entry(parts: Parts, kind: str, st: os.stat_result, **kw: Any) -> Entry:
        uid, gid = (st.st_uid, st.st_gid) if owners else (0, 0)
        mode = 0o777 if kind == "link" else stat.S_IMODE(st.st_mode)
        return Entry(parts, kind, kw.pop("mode", mode), uid=uid, gid=gid, **kw)

    try:
        st = os.stat(root) if not files else os.lstat(root)
    except OSError as exc:
        raise PackRefused(
            f"Cannot read the source {'path' if files else 'directory'} {root}: {exc.strerror}.",
            "Check that it exists and is readable.",
        ) from None
    if files and stat.S_ISREG(st.st_mode):
        data, mode = _read_regular(root)
        out.append(entry(prefix, "file", st, mode=mode, data=data))
        return
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(root, "is not a directory" if not files else "is not a file or directory")
    out.append(entry(prefix, "dir", st))
    stack: list[tuple[Path, Parts]] = [(root, prefix)]
    while stack:
        directory, parts = stack.pop()
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise PackRefused(f"Cannot list {directory}: {exc.strerror}.") from None
        for name in names:
            path = directory / name
            st = os.lstat(path)
            here = (*parts, name)
            if stat.S_ISDIR(st.st_mode):
                out.append(entry(here, "dir", st))
                stack.append((path, here))
            elif stat.S_ISREG(st.st_mode):
                data, mode = _read_regular(path)
                out.append(entry(here, "file", st, mode=mode, data=data))
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if target.startswith("/"):
                    raise _refuse(path, f"is an absolute symlink ({target!r})")
                out.append(entry(here, "link", st, target=target, source=str(path)))
            else:
                raise _refuse(path, "is a device node, FIFO or socket")


def collect(
    sources: Mapping[str, Path] | Sequence[Path], *, owners: bool = False, files: bool = False
) -> list[Entry]:
    """The members of the source trees, checked (see :func:`pack_dirs`), sorted by name.

    ``owners`` keeps each member's numeric owner; ``files`` allows a source that is a regular
    file (stored under its archive name).
    """
    entries: list[Entry] = []
    roots = _sources(sources)
    for prefix, root in roots:
        try:
            _walk(root, prefix, entries, owners, files)
        except OSError as exc:  # a file vanished or is unreadable while packing
            raise PackRefused(
                f"Cannot read {exc.filename}: {exc.strerror}.",
                "Check its permissions, and that nothing changes the tree while it is packed.",
            ) from None
    entries.sort(key=lambda e: e.parts)
    _check_tree(entries)
    links = {e.parts: e.target for e in entries if e.kind == "link"}
    for entry in entries:
        if entry.kind != "link":
            continue
        root_prefix = max((p for p, _ in roots if entry.parts[: len(p)] == p), key=len)
        where = _resolve(entry.parts[:-1], entry.target, links)
        if where is None or where[: len(root_prefix)] != root_prefix:
            raise _refuse(
                Path(entry.source), f"is a symlink that points outside its tree ({entry.target!r})"
            )
    return entries


def _check_tree(entries: Sequence[Entry]) -> None:
    problem = _tree_problems(entries)
    if problem is not None:
        entry, what = problem
        raise PackRefused(
            f"The archive member {'/'.join(entry.parts)!r} {what}.",
            "Fix or remove it in the source tree, or give the source directories archive names "
            "that do not overlap.",
        )


def build(entries: Sequence[Entry]) -> bytes:
    """The deterministic (uncompressed) tar of ``entries``, sorted by name."""
    ordered = sorted(entries, key=lambda e: e.parts)
    _check_tree(ordered)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for entry in ordered:
        name = "/".join(entry.parts)
        if entry.kind == "dir":
            info = fixed_info(name, tarfile.DIRTYPE, entry.mode)
        elif entry.kind == "file":
            info = fixed_info(name, tarfile.REGTYPE, entry.mode, size=len(entry.data))
        else:
            info = fixed_info(name, tarfile.SYMTYPE, 0o777, linkname=entry.target)
        info.uid, info.gid = entry.uid, entry.gid
        members.append((info, entry.data if entry.kind == "file" else None))
    return write_tar(members)


def pack_dirs(sources: Mapping[str, Path] | Sequence[Path]) -> bytes:
    """A deterministic (uncompressed) tar of the source directories.

    ``sources`` maps archive names (``"etc/libvirt"``) to directories, or is a list of
    directories stored under their own names. Raises :class:`PackRefused` for anything that
    cannot be restored faithfully and safely (see the module documentation).
    """
    return build(collect(sources))


def entries_of(archive: bytes) -> list[Entry]:
    """The members of a configuration archive, checked as :func:`unpack_to` checks them, with
    their contents."""
    if len(archive) > MAX_ARCHIVE_SIZE:
        raise UnsafeArchive(
            f"The configuration archive is {len(archive)} bytes, more than the "
            f"{MAX_ARCHIVE_SIZE} allowed.",
            "Restore the configuration from a backup.",
        )
    return [
        replace(e, data=archive[e.offset : e.offset + e.size], offset=0) if e.kind == "file" else e
        for e in _plan(archive)
    ]


# --- unpacking -----------------------------------------------------------------------------


def _unsafe(name: str, what: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"The configuration archive was refused: member {name[:200]!r} {what}.",
        "Nothing was written. The archive was not made by hostseal or was tampered with; "
        "restore the configuration from a backup.",
    )


def _plan(raw: bytes) -> list[Entry]:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = tar.getmembers()
    except TAR_ERRORS as exc:
        raise UnsafeArchive(
            f"The configuration archive is not a valid tar archive ({exc}).",
            "Restore the configuration from a backup.",
        ) from None
    if len(members) > MAX_MEMBERS:
        raise _unsafe(members[MAX_MEMBERS].name, f"is one of more than {MAX_MEMBERS} members")
    entries: list[Entry] = []
    for m in members:
        problem = _name_problem(m.name)
        if problem is not None:
            raise _unsafe(m.name, problem)
        parts = tuple(m.name.split("/"))
        mode = m.mode & 0o7777
        if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            if m.offset_data + m.size > len(raw):
                raise _unsafe(m.name, "is truncated")
            entries.append(
                Entry(parts, "file", mode, size=m.size, offset=m.offset_data, uid=m.uid, gid=m.gid)
            )
        elif m.type == tarfile.DIRTYPE:
            entries.append(Entry(parts, "dir", mode, uid=m.uid, gid=m.gid))
        elif m.type == tarfile.SYMTYPE:
            entries.append(Entry(parts, "link", 0o777, target=m.linkname, uid=m.uid, gid=m.gid))
        elif m.type == tarfile.LNKTYPE:
            raise _unsafe(m.name, "is a hard link")
        elif m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            raise _unsafe(m.name, "is a device node")
        elif m.type == tarfile.FIFOTYPE:
            raise _unsafe(m.name, "is a FIFO")
        else:
            raise _unsafe(m.name, f"has an unsupported type {m.type!r}")
    problem2 = _tree_problems(entries)
    if problem2 is not None:
        raise _unsafe("/".join(problem2[0].parts), problem2[1])
    return sorted(entries, key=lambda e: e.parts)


def _prepare(dest: Path) -> None:
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        try:
            os.mkdir(dest, 0o700)
        except OSError as exc:
            raise UnpackRefused(
                f"Cannot create {dest}: {exc.strerror}.", "Check that its parent exists."
            ) from None
        return
    if not stat.S_ISDIR(st.st_mode):
        raise UnpackRefused(f"{dest} is not a directory.", "Unpack into a new or empty directory.")
    try:
        busy = bool(os.listdir(dest))
    except OSError as exc:
        raise UnpackRefused(f"Cannot read {dest}: {exc.strerror}.") from None
    if busy:
        raise UnpackRefused(
            f"{dest} is not empty; the configuration archive is unpacked only into an empty "
            "directory.",
            "Unpack into a new or empty directory.",
        )


def unpack_to(
    archive: bytes, dest: Path, *, max_size: int = MAX_ARCHIVE_SIZE, owners: bool = False
) -> None:
    """Unpack a configuration archive into ``dest`` (created if missing, else must be empty).

    ``owners``: give every member the numeric owner stored in the archive (needs root).

    Every member is checked before anything is written; a hostile archive raises
    :class:`UnsafeArchive` and leaves ``dest`` untouched. A failure while writing (disk full)
    raises :class:`UnpackRefused` and may leave a partial tree: unpack into a fresh directory
    and remove it on error.
    """
    if len(archive) > max_size:
        raise UnsafeArchive(
            f"The configuration archive is {len(archive)} bytes, more than the {max_size} allowed.",
            "Restore the configuration from a backup.",
        )
    raw = archive
    entries = _plan(raw)
    _prepare(dest)
    made: set[Parts] = set()
    dir_modes: list[tuple[str, int]] = []
    dir_owners: list[tuple[str, int, int]] = []
    root = os.fspath(dest)
    view = memoryview(raw)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    umask = os.umask(0o077)
    os.umask(umask)
    created_mode = 0o600 & ~umask
    try:
        for entry in entries:
            # Plain strings, not pathlib: this loop runs once per file of the configuration.
            path = os.path.join(root, *entry.parts)
            for i in range(1, len(entry.parts)):
                if entry.parts[:i] not in made:
                    os.mkdir(os.path.join(root, *entry.parts[:i]), 0o700)
                    made.add(entry.parts[:i])
            if entry.kind == "dir":
                if entry.parts not in made:
                    os.mkdir(path, 0o700)
                    made.add(entry.parts)
                dir_modes.append((path, entry.mode))
                if owners:
                    dir_owners.append((path, entry.uid, entry.gid))
            elif entry.kind == "file":
                # Created owner-only; the final mode is set once the content is in, unless
                # the file already has it (most configuration files are 0600).
                fd = os.open(path, flags, 0o600)
                try:
                    data = view[entry.offset : entry.offset + entry.size]
                    while data:
                        data = data[os.write(fd, data) :]
                    if owners:
                        os.fchown(fd, entry.uid, entry.gid)
                    if entry.mode != created_mode:
                        os.fchmod(fd, entry.mode)
                finally:
                    os.close(fd)
        for entry in entries:
            if entry.kind == "link":
                os.symlink(entry.target, os.path.join(root, *entry.parts))
                if owners:
                    os.lchown(os.path.join(root, *entry.parts), entry.uid, entry.gid)
        for path, uid, gid in dir_owners:
            os.chown(path, uid, gid)
        for path, mode in sorted(dir_modes, key=lambda d: d[0].count(os.sep), reverse=True):
            os.chmod(path, mode)
    except OSError as exc:
        raise UnpackRefused(
            f"Unpacking the configuration into {dest} failed: {exc.strerror} ({exc.filename}).",
            "Check free space and permissions, remove the partial directory and try again.",
        ) from None
