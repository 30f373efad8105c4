"""The configuration protected in place: adopt, release, the boot-time mount, auto-backup.

ESXi keeps its configuration only in the encrypted archive and restores it into memory at boot.
These recipes do the same for chosen paths of a Linux host:

* :func:`adopt` seals files or directories (SSH host keys, ``/etc/libvirt/secrets``, the agent's
  credentials) into the bundle under their absolute paths, with owner and mode; once the new
  generation is written and proven to unlock, the plaintext on disk is overwritten and truncated
  (a directory emptied), leaving an empty placeholder, and the live copy is placed in the live
  tree on a tmpfs and bind-mounted over the placeholder, so services keep reading it.
* :func:`mount` (``hostseal config unlock --mount``, run by the boot unit) restores the whole
  configuration into the live tree (``/run/hostseal/config``) and bind-mounts each adopted path
  over its placeholder.
* :func:`autobackup` seals the live copies again when they changed (a timer, and at shutdown).
* :func:`release` writes a path back to disk and removes it from the bundle.

Crash safety: nothing on disk is removed before the new generation is in place and proven
(:meth:`~.store.Store.write`); killed before, the old generation and the plaintext remain;
killed after, the new generation holds the content. An adopt interrupted between the two is
finished by the next boot's mount or by adopting the path again (the plaintext left on disk is
removed only when it equals the sealed copy).

Edge: drives the TPM (through :mod:`~.manager`), writes the disk, /run and mounts.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from hostseal.secureconfig import _inplace_fs as fs
from hostseal.secureconfig.adopted import (
    Adopted,
    AdoptedPath,
    AdoptRefused,
    join,
    path_problem,
    split,
)
from hostseal.secureconfig.archive import Entry, collect, entries_of
from hostseal.secureconfig.errors import SecureConfigError
from hostseal.secureconfig.manager import HostContext, Outcome, open_config, save_config, unlock
from hostseal.secureconfig.store import Bundle

RUNTIME_CONFIG = Path("/run/hostseal/config")
"""The live tree: where the boot-time restore writes (a tmpfs), and what the mounts show."""

OLD_BLOCKS = (
    "The plaintext was overwritten and removed, but an SSD (wear levelling) or a copy-on-write "
    "or journalling file system (btrfs, ZFS, ext4 data=journal) may keep old blocks, and "
    "backups or snapshots taken before keep their copies. Regenerate what can be regenerated "
    "(hostseal config adopt --regenerate-ssh-keys makes new SSH host keys directly in the "
    "sealed set) and rotate what cannot (libvirt secrets, credentials)."
)
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")


@dataclass
class InPlaceOutcome:
    """What :func:`adopt`, :func:`release`, :func:`mount` or :func:`autobackup` did."""

    paths: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    generation: int | None = None
    saved: bool = False
    mounted: list[str] = field(default_factory=list)
    unlocked: Outcome | None = None
    """:func:`mount`: what the unlock did (``None`` when the live tree was already there)."""


def _open(ctx: HostContext) -> tuple[tuple[Bundle, bytes] | None, list[Entry], Adopted]:
    """The opened bundle (``None`` when there is none yet), the base trees and the adopted set."""
    if not ctx.store.exists():
        return None, [], Adopted()
    bundle, key, config = open_config(ctx)
    base, adopted = split(entries_of(config))
    return (bundle, key), base, adopted


def _check_places(paths: Sequence[str], adopted: Adopted, protected: Sequence[str]) -> None:
    taken = [p.path for p in adopted.paths]
    for path in paths:
        problem = path_problem(path, taken, protected)
        if problem is not None:
            raise AdoptRefused(f"{path} {problem}.", "Nothing was changed.")
        taken.append(path)


def _protected(ctx: HostContext, live: Path) -> list[str]:
    return [os.path.abspath(ctx.bootbank), os.path.abspath(live)]


P = ParamSpec("P")
R = TypeVar("R")


def _locked(
    recipe: Callable[Concatenate[HostContext, P], R],
) -> Callable[Concatenate[HostContext, P], R]:
    """Run ``recipe`` holding the bootbank's lock (:meth:`~.store.Store.locked`)."""

    @functools.wraps(recipe)
    def run(ctx: HostContext, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with ctx.store.locked():
            return recipe(ctx, *args, **kwargs)

    return run


@_locked
def adopt(
    ctx: HostContext,
    paths: Sequence[str],
    live: Path = RUNTIME_CONFIG,
    *,
    mount: bool = True,
    contents: Mapping[str, Path] | None = None,
) -> InPlaceOutcome:
    """Seal ``paths`` into the bundle, then leave empty placeholders on disk (see the module).

    ``contents`` maps some of the paths to where their new content is read from (new SSH host
    keys); the others are read from the paths themselves.
    """
    contents = dict(contents or {})
    opened, base, adopted = _open(ctx)
    out = InPlaceOutcome()
    finished = _finish_interrupted(
        adopted, [p for p in paths if p not in contents], live, mount, out
    )
    paths = [p for p in paths if p not in finished]
    if not paths:
        return out
    # New content (regenerated keys) may replace what is adopted; anything else must be new.
    replaced = [p for p in paths if p in contents and adopted.find(p) is not None]
    others = adopted
    for path in replaced:
        others = others.without(AdoptedPath(path, adopted.find(path).kind))  # type: ignore[union-attr]
    _check_places(paths, others, _protected(ctx, live))
    new: list[AdoptedPath] = []
    for path in paths:
        source = contents.get(path, Path(path))
        kind = fs.disk_kind(str(source)) if path in contents else fs.disk_kind(path)
        if path in contents and os.path.lexists(path):
            fs.disk_kind(path)  # what is replaced must be a plain file or directory too
        item = AdoptedPath(path, kind)
        entries = collect({item.member_name: source}, owners=True, files=True)
        adopted = adopted.plus(item, entries)
        new.append(item)
    saved = save_config(ctx, join(base, adopted), opened)
    out.generation, out.saved = saved.info.generation, True
    out.notices += saved.notices
    mounted = fs.mount_points()
    for item in new:
        if item.path in mounted:
            fs.unbind(item.path)  # the disk underneath is wiped, the live copy replaced
        state = fs.placeholder_state(item)
        if state == "missing":
            fs.make_placeholder(item)
        elif state == "content":
            fs.wipe(item)
        _go_live(item, adopted.entries_of(item), live, mount, out)
        out.paths.append(item.path)
    fs.write_live_manifest(live, adopted)
    out.notices.append(OLD_BLOCKS)
    if not contents and any(os.path.basename(p).startswith("ssh_host_") for p in paths):
        out.notices.append(
            "SSH host keys were adopted as they are; copies of them may survive on the disk. To "
            "stop trusting them: hostseal config adopt --regenerate-ssh-keys."
        )
    if not mount:
        out.notices.append(_NOT_MOUNTED)
    return out


_NOT_MOUNTED = (
    "Not mounted (--no-mount): the adopted paths are empty placeholders until the next boot's "
    "hostseal config unlock --mount."
)


def _go_live(
    item: AdoptedPath, entries: Sequence[Entry], live: Path, mount: bool, out: InPlaceOutcome
) -> None:
    fs.put_live(live, item, entries)
    if mount:
        fs.bind(fs.live_path(live, item), item.path)
        out.mounted.append(item.path)


def _finish_interrupted(
    adopted: Adopted, paths: Sequence[str], live: Path, mount: bool, out: InPlaceOutcome
) -> list[str]:
    """The already adopted ``paths`` whose plaintext is still on disk, identical to the sealed
    copy (an adopt killed after sealing): wiped and made live now."""
    finished = []
    mounted = fs.mount_points()
    for path in paths:
        item = adopted.find(path)
        if item is None or path in mounted or fs.placeholder_state(item) != "content":
            continue
        if not _same(fs.read_disk(item), adopted.entries_of(item)):
            continue
        fs.wipe(item)
        _go_live(item, adopted.entries_of(item), live, mount, out)
        out.notices.append(
            f"{path} was already sealed but still on disk (an earlier adopt was interrupted): "
            "its plaintext is removed now."
        )
        out.paths.append(path)
        finished.append(path)
    return finished


def _same(a: Sequence[Entry], b: Sequence[Entry]) -> bool:
    def key(e: Entry) -> tuple[object, ...]:
        return (e.parts, e.kind, e.mode, e.data, e.target, e.uid, e.gid)

    return sorted(map(key, a)) == sorted(map(key, b))


@_locked
def release(
    ctx: HostContext, path: str, live: Path = RUNTIME_CONFIG, *, mount: bool = True
) -> InPlaceOutcome:
    """Write ``path`` back to disk (its live copy if there is one, else the sealed one), then
    seal a generation without it. Killed between the two, the path is on disk and still
    adopted: release it again."""
    opened, base, adopted = _open(ctx)
    item = adopted.find(os.path.normpath(path)) if path.startswith("/") else None
    if item is None or opened is None:
        listed = ", ".join(p.path for p in adopted.paths) or "none"
        raise AdoptRefused(
            f"{path} is not an adopted path (adopted: {listed}).",
            "Give the absolute path exactly as hostseal config status lists it.",
        )
    out = InPlaceOutcome(paths=[item.path])
    live_copy = fs.read_live(live, [item])
    entries = live_copy.entries if live_copy.paths else adopted.entries_of(item)
    if mount and item.path in fs.mount_points():
        fs.unbind(item.path)
    fs.write_back(item, entries)
    remaining = adopted.without(item)
    saved = save_config(ctx, join(base, remaining), opened)
    out.generation, out.saved, out.notices = saved.info.generation, True, saved.notices
    fs.drop_live(live, item)
    fs.write_live_manifest(live, remaining)
    out.notices.append(f"{item.path} is on the disk in clear again.")
    return out


def mount(
    ctx: HostContext, live: Path = RUNTIME_CONFIG, recovery_secret: bytes | None = None
) -> InPlaceOutcome:
    """The boot-time restore: unlock into ``live`` with owners, then bind-mount every adopted
    path over its placeholder (created empty if missing). When ``live`` already holds this
    boot's restore (the unit was restarted), only the missing mounts are made."""
    out = InPlaceOutcome()
    live.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # /run/hostseal
    if live.is_dir() and any(live.iterdir()):
        out.notices.append(f"{live} already holds this boot's restore; nothing was unlocked.")
    else:
        out.unlocked = unlock(ctx, live, recovery_secret, owners=os.geteuid() == 0)
        out.notices += out.unlocked.notices
    paths = fs.live_paths(live) or []
    sealed = fs.read_live(live, paths)
    mounted = fs.mount_points()
    for item in paths:
        if item.path in mounted:
            continue
        _settle(item, sealed.entries_of(item), out)
        fs.bind(fs.live_path(live, item), item.path)
        out.mounted.append(item.path)
    out.paths = [p.path for p in paths]
    if paths and out.unlocked is not None:
        fs.write_live_manifest(live, sealed)
    return out


def _settle(item: AdoptedPath, sealed: Sequence[Entry], out: InPlaceOutcome) -> None:
    """Make ``item``'s placeholder ready to be mounted over."""
    state = fs.placeholder_state(item)
    if state == "missing":
        fs.make_placeholder(item)
    elif state == "wrong-kind":
        raise SecureConfigError(
            f"{item.path} on disk is not a {item.kind}, so the adopted {item.kind} cannot be "
            "mounted over it.",
            f"Remove {item.path} (the sealed copy is intact) and restart hostseal-unlock.service.",
        )
    elif state == "content":
        if _same(fs.read_disk(item), sealed):
            fs.wipe(item)
            out.notices.append(
                f"{item.path} was sealed but still on disk (an adopt was interrupted): its "
                "plaintext is removed now."
            )
        else:
            out.notices.append(
                f"{item.path} on disk holds content that is not the sealed copy; it is hidden "
                "under the mount but still on the disk. Release the path (hostseal config "
                "release), look at both, and adopt it again."
            )


def autobackup(ctx: HostContext, live: Path = RUNTIME_CONFIG) -> InPlaceOutcome:
    """Seal the live copies of the adopted paths again, only when they changed (ESXi's
    auto-backup); the unchanged case needs no TPM."""
    paths = fs.live_paths(live)
    if paths is None:
        return InPlaceOutcome(
            notices=[
                f"Nothing to save: {live} holds no live copies of adopted paths (none are "
                "adopted, or the configuration was not restored with hostseal config unlock "
                "--mount on this boot)."
            ]
        )
    current = fs.read_live(live, paths)
    out = InPlaceOutcome(paths=[p.path for p in paths])
    if current.digest() == fs.saved_digest(live) and len(current.paths) == len(paths):
        return out
    return _save_live(ctx, live, current, out)


@_locked
def _save_live(
    ctx: HostContext, live: Path, current: Adopted, out: InPlaceOutcome
) -> InPlaceOutcome:
    """The live copies ``current`` merged into the sealed set, sealed if that changed it."""
    opened, base, sealed = _open(ctx)
    merged = sealed
    for item in sealed.paths:
        copy = current.find(item.path)
        if copy is None:
            out.notices.append(f"{item.path} has no live copy; its sealed copy is kept.")
        elif copy.kind != item.kind:
            out.notices.append(f"{item.path} is no longer a {item.kind}; its sealed copy is kept.")
        else:
            merged = merged.plus(item, current.entries_of(copy))
    if merged.digest() != sealed.digest():
        saved = save_config(ctx, join(base, merged), opened)
        out.generation, out.saved = saved.info.generation, True
        out.notices += saved.notices
    fs.write_live_manifest(live, merged)
    return out


def status(live: Path = RUNTIME_CONFIG) -> dict[str, object]:
    """The adopted paths as the live tree knows them, whether each is mounted, and whether the
    live copies differ from what was last sealed (no TPM, no secret)."""
    paths = fs.live_paths(live)
    if paths is None:
        return {"live": str(live), "restored": False, "adopted": [], "unsaved_changes": None}
    current = fs.read_live(live, paths)
    mounted = fs.mount_points()
    saved = fs.saved_digest(live)
    return {
        "live": str(live),
        "restored": True,
        "adopted": [{"path": p.path, "kind": p.kind, "mounted": p.path in mounted} for p in paths],
        "unsaved_changes": None if saved is None else current.digest() != saved,
    }


def new_ssh_host_keys(scratch: Path, ssh_dir: Path = Path("/etc/ssh")) -> dict[str, Path]:
    """New SSH host keys made with ssh-keygen in ``scratch`` (on a tmpfs): a map of the paths
    they replace (``/etc/ssh/ssh_host_TYPE_key`` and ``.pub``) to the new files."""
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SecureConfigError(
            "ssh-keygen is not installed, so new SSH host keys cannot be made.",
            "Install openssh-client, or adopt the existing keys without --regenerate-ssh-keys.",
        )
    made: dict[str, Path] = {}
    for kind in SSH_KEY_TYPES:
        name = f"ssh_host_{kind}_key"
        key = scratch / name
        done = subprocess.run(
            [exe, "-q", "-t", kind, "-N", "", "-C", f"root@{os.uname().nodename}", "-f", str(key)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SecureConfigError(
                f"ssh-keygen could not make a {kind} host key: {done.stderr.strip()[:300]}",
                "Fix ssh-keygen, or adopt the existing keys without --regenerate-ssh-keys.",
            )
        os.chmod(key, 0o600)
        os.chmod(key.with_name(name + ".pub"), 0o644)
        made[str(ssh_dir / name)] = key
        made[str(ssh_dir / (name + ".pub"))] = key.with_name(name + ".pub")
    return made


def adopt_new_ssh_host_keys(
    ctx: HostContext,
    live: Path = RUNTIME_CONFIG,
    *,
    mount: bool = True,
    ssh_dir: Path = Path("/etc/ssh"),
) -> InPlaceOutcome:
    """Make new SSH host keys straight into the sealed set (the old ones, if on disk, are wiped
    and never need to be trusted again)."""
    live.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=live, prefix=".ssh-keys-") as scratch:
        made = new_ssh_host_keys(Path(scratch), ssh_dir)
        out = adopt(ctx, sorted(made), live, mount=mount, contents=made)
    out.notices.append(
        "New SSH host keys were made: clients will warn that the host key changed. Give them "
        "the new fingerprints (ssh-keygen -lf on the .pub files)."
    )
    return out


__all__ = [
    "OLD_BLOCKS",
    "RUNTIME_CONFIG",
    "AdoptRefused",
    "InPlaceOutcome",
    "adopt",
    "adopt_new_ssh_host_keys",
    "autobackup",
    "mount",
    "new_ssh_host_keys",
    "release",
    "status",
]
