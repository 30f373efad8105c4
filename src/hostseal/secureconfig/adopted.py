"""The paths adopted in place: how they are held in the configuration archive, and which paths
may be adopted.

``hostseal config adopt PATH`` moves a file or directory (SSH host keys, ``/etc/libvirt/secrets``,
the agent's credentials) into the sealed configuration; at boot it is restored into a tmpfs and
bind-mounted over an empty placeholder at its original place (:mod:`~.inplace`). Inside the
configuration archive (the plaintext of ``local.tgz.ve``), next to the trees saved with
``config save --from``, the adopted paths are::

    .hostseal-adopted/manifest.json        {"format": "hostseal-adopted", "version": 1,
                                             "paths": [{"path": "/etc/ssh/ssh_host_ed25519_key",
                                                        "kind": "file"}, ...]}
    .hostseal-adopted/root/<absolute path>  the file or directory tree, every member with its
                                             permission bits and numeric owner (uid, gid)

The manifest says which paths were adopted (the archive alone cannot tell ``/etc/ssh`` from one
file in it); the members under ``root/`` are exactly those paths and what lies below them.

Pure: archive entries and strings in, values out.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from hostseal.secureconfig.archive import Entry, build
from hostseal.secureconfig.errors import SecureConfigError, UnsafeArchive

ADOPTED = ".hostseal-adopted"
MANIFEST_PARTS = (ADOPTED, "manifest.json")
ROOT_PARTS = (ADOPTED, "root")
MANIFEST_FORMAT = "hostseal-adopted"
MANIFEST_VERSION = 1
KINDS = ("file", "dir")

KERNEL_TREES = ("/run", "/proc", "/sys", "/dev")
"""Memory and kernel file systems: nothing of theirs is on a disk; /run holds the live copies."""


class AdoptRefused(SecureConfigError):
    """A path cannot be adopted (or released) as asked; nothing was changed."""


@dataclass(frozen=True)
class AdoptedPath:
    """One adopted path: its absolute name and whether it is a file or a directory."""

    path: str
    kind: str

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))

    @property
    def member_parts(self) -> tuple[str, ...]:
        """Where it lies in the archive (and in the live tree): ``.hostseal-adopted/root/...``."""
        return ROOT_PARTS + self.parts

    @property
    def member_name(self) -> str:
        return "/".join(self.member_parts)

    def holds(self, entry: Entry) -> bool:
        return entry.parts[: len(self.member_parts)] == self.member_parts


@dataclass
class Adopted:
    """The adopted set: the paths and the archive members under ``.hostseal-adopted/root``."""

    paths: list[AdoptedPath] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    def find(self, path: str) -> AdoptedPath | None:
        return next((p for p in self.paths if p.path == path), None)

    def entries_of(self, path: AdoptedPath) -> list[Entry]:
        return [e for e in self.entries if path.holds(e)]

    def without(self, path: AdoptedPath) -> Adopted:
        return Adopted(
            [p for p in self.paths if p != path], [e for e in self.entries if not path.holds(e)]
        )

    def plus(self, path: AdoptedPath, entries: Iterable[Entry]) -> Adopted:
        kept = self.without(path) if self.find(path.path) else self
        return Adopted([*kept.paths, path], [*kept.entries, *entries])

    def archive(self) -> bytes:
        """The adopted set alone as a deterministic archive (what :meth:`digest` hashes)."""
        return join([], self)

    def digest(self) -> str:
        """SHA-256 of :meth:`archive`: equal exactly when paths, contents, modes and owners are."""
        return hashlib.sha256(self.archive()).hexdigest()


def manifest_bytes(paths: Sequence[AdoptedPath]) -> bytes:
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "paths": [{"path": p.path, "kind": p.kind} for p in sorted(paths, key=lambda p: p.path)],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def join(base: Sequence[Entry], adopted: Adopted) -> bytes:
    """The configuration archive of ``base`` (the ``--from`` trees) and the adopted set."""
    if any(e.parts[0] == ADOPTED for e in base):
        raise AdoptRefused(
            f"A source directory is named {ADOPTED!r}, the name hostseal keeps for adopted paths.",
            "Rename that directory or leave it out of --from.",
        )
    if not adopted.paths:
        return build(base)
    manifest = Entry(MANIFEST_PARTS, "file", 0o600, data=manifest_bytes(adopted.paths))
    return build([*base, manifest, *adopted.entries])


def _corrupt(what: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"The adopted paths of the configuration archive are damaged: {what}.",
        "Restore the configuration from a backup (hostseal config restore FILE).",
    )


def parse_manifest(raw: bytes) -> list[AdoptedPath]:
    """The adopted paths listed by ``manifest.json``; every path checked as :func:`path_problem`
    checks it, none inside another."""
    try:
        doc = json.loads(raw)
        if doc["format"] != MANIFEST_FORMAT or doc["version"] != MANIFEST_VERSION:
            raise _corrupt(f"manifest format {doc['format']!r} version {doc['version']!r}")
        paths = [AdoptedPath(str(p["path"]), str(p["kind"])) for p in doc["paths"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(f"manifest.json is not valid ({type(exc).__name__})") from None
    for i, p in enumerate(paths):
        problem = path_problem(p.path, [q.path for q in paths[:i]])
        if problem is not None or p.kind not in KINDS:
            why = problem or "has an unknown kind"
            raise _corrupt(f"manifest.json lists {p.path!r} ({p.kind}), which {why}")
    return paths


def _above(entry: Entry, path: AdoptedPath) -> bool:
    """A directory above an adopted path (``.hostseal-adopted``, ``root``, ``root/etc``...)."""
    return path.member_parts[: len(entry.parts)] == entry.parts


def split(entries: Sequence[Entry]) -> tuple[list[Entry], Adopted]:
    """``(base, adopted)`` of a configuration archive's entries; the adopted part is checked:
    every member under ``root/`` belongs to a listed path, every listed path is there with its
    kind."""
    base = [e for e in entries if e.parts[0] != ADOPTED]
    mine = [e for e in entries if e.parts[0] == ADOPTED]
    manifest = next((e for e in mine if e.parts == MANIFEST_PARTS), None)
    if manifest is None:
        if mine:
            raise _corrupt(f"{mine[0].name!r} is there but manifest.json is not")
        return base, Adopted()
    paths = parse_manifest(manifest.data)
    adopted = Adopted(paths, [])
    for entry in mine:
        if entry.parts == MANIFEST_PARTS:
            continue
        if any(p.holds(entry) for p in paths):
            adopted.entries.append(entry)
        elif not (entry.kind == "dir" and any(_above(entry, p) for p in paths)):
            raise _corrupt(f"{entry.name!r} belongs to no adopted path")
    for p in paths:
        top = next((e for e in adopted.entries if e.parts == p.member_parts), None)
        if top is None or top.kind != p.kind:
            raise _corrupt(f"{p.path} is listed as a {p.kind} but is not in the archive as one")
    return base, adopted


def under(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or lies below it (both normalized absolute paths)."""
    return path == top or top == "/" or path.startswith(top.rstrip("/") + "/")


def path_problem(path: str, adopted: Sequence[str], protected: Sequence[str] = ()) -> str | None:
    """Why ``path`` cannot be adopted next to ``adopted``, keeping clear of ``protected`` (the
    bootbank, the live tree); ``None`` if it can. The checks that need the disk (it exists, is a
    file or directory, no symlink on the way) are :mod:`~.inplace`'s."""
    if not path.startswith("/"):
        return "is a relative path: give the absolute path"
    if posixpath.normpath(path) != path or path.startswith("//"):
        return f"is not a normalized absolute path (did you mean {posixpath.normpath(path)}?)"
    if path == "/":
        return "is the root directory"
    for top in KERNEL_TREES:
        if under(path, top):
            return f"lies under {top}, a memory or kernel file system: it is not kept on a disk"
    for other in adopted:
        if path == other:
            return "is already adopted"
        if under(path, other):
            return f"lies inside {other}, which is already adopted"
        if under(other, path):
            return f"contains {other}, which is already adopted (release it first)"
    for place in protected:
        if under(path, place) or under(place, path):
            return (
                f"overlaps {place}, where hostseal keeps the sealed configuration or its live copy"
            )
    return None


def rebase(entries: Iterable[Entry], old: tuple[str, ...], new: tuple[str, ...]) -> list[Entry]:
    """``entries`` named under ``old`` renamed to lie under ``new``."""
    return [replace(e, parts=new + e.parts[len(old) :]) for e in entries]
