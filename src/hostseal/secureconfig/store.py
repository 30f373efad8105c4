"""The bootbank on disk: generations of ``state.tgz`` written so a crash never loses both.

Layout of the bootbank directory (mode 0700):

* ``state.tgz``          -- the current generation;
* ``state.tgz.previous`` -- the generation before, kept only while a new one is being written
  and proven; removed once the new one has unlocked from disk;
* ``state.tgz.new``      -- the generation being written;
* ``audit.log``          -- JSON lines: who read or changed recovery keys, when and why (no
  secrets). Each line has ``uid`` and ``user`` (and ``sudo_user`` under sudo); a read of the
  keys also says whether a person or the hostseal agent read them, and the reason.

A save writes ``.previous`` (a copy of the current), then ``.new``, proves ``.new`` unlocks,
renames it over ``state.tgz``, proves that, and removes ``.previous``; each file is written with
:func:`hostseal.fsutil.atomic_write`. Whatever point a crash interrupts, ``state.tgz`` is a whole
generation (old or new), and :meth:`Store.load` falls back to ``.new`` or ``.previous`` only if
``state.tgz`` is missing or damaged.

Commands that read a generation, change it and write the next (``config save``, ``adopt``,
``release``, ``autobackup``) hold :meth:`Store.locked` meanwhile.

Edge: reads and writes the bootbank directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write, fsync_dir
from hostseal.secureconfig.bundle_file import read_state_tgz
from hostseal.secureconfig.errors import SecureConfigError
from hostseal.secureconfig.info import EncryptionInfo

STATE = "state.tgz"
PREVIOUS = "state.tgz.previous"
NEW = "state.tgz.new"
AUDIT = "audit.log"


class Reader(StrEnum):
    """Who read the recovery keys: a person (through the CLI) or the agent (to escrow them)."""

    PERSON = "person"
    AGENT = "agent"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class NoBundle(SecureConfigError):
    """There is no sealed configuration in the bootbank yet."""


@dataclass
class Bundle:
    """One generation of the sealed configuration, as read from ``state.tgz``."""

    raw: bytes
    info: EncryptionInfo
    payload: memoryview
    extras: dict[str, bytes] = field(default_factory=dict)
    source: str = STATE
    notices: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes, source: str = STATE) -> Bundle:
        info, payload, extras = read_state_tgz(raw)
        return cls(raw, info, payload, extras, source)


class Store:
    """A bootbank directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return any((self.path / name).is_file() for name in (STATE, NEW, PREVIOUS))

    def load(self) -> Bundle:
        """The current generation; falls back to a whole ``.new`` or ``.previous``."""
        problems: list[str] = []
        for name in (STATE, NEW, PREVIOUS):
            try:
                raw = (self.path / name).read_bytes()
            except FileNotFoundError:
                continue
            except OSError as err:
                problems.append(f"{name}: {err.strerror}")
                continue
            try:
                bundle = Bundle.parse(raw, name)
            except HostsealError as err:
                problems.append(f"{name}: {err.message}")
                continue
            if problems:
                bundle.notices.append(
                    f"Using {name}: " + "; ".join(problems) + ". Save again to repair."
                )
            return bundle
        if problems:
            raise SecureConfigError(
                f"No usable sealed configuration in {self.path}: " + "; ".join(problems) + ".",
                "Restore the bootbank from a backup: hostseal config restore FILE.",
            )
        raise NoBundle(
            f"There is no sealed configuration in {self.path}.",
            "Create one with: hostseal config save --from DIR (or set --bootbank / "
            "HOSTSEAL_BOOTBANK to where it is).",
        )

    def write(self, raw: bytes, prove: Callable[[Bundle], None]) -> None:
        """Install a new generation; ``prove`` must raise if a bundle does not unlock."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        current = self.path / STATE
        if current.is_file():
            atomic_write(self.path / PREVIOUS, current.read_bytes())
        atomic_write(self.path / NEW, raw)
        prove(Bundle.parse((self.path / NEW).read_bytes(), NEW))
        os.replace(self.path / NEW, current)
        fsync_dir(self.path)
        prove(Bundle.parse(current.read_bytes()))
        self.cleanup()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the bootbank's lock (``flock`` on the directory itself, so no lock file) from
        reading a generation to writing the next: two writers (an adopt and the hourly
        auto-backup) then cannot lose each other's change. Blocks while another holds it."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def cleanup(self) -> None:
        """Drop the transition files once ``state.tgz`` is known to unlock."""
        removed = False
        for name in (PREVIOUS, NEW):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
                removed = True
        if removed:
            fsync_dir(self.path)

    def audit(self, action: str, **fields: object) -> None:
        """Append one line to the bootbank's audit log (never a secret)."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        uid = os.getuid()
        record: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "uid": uid,
            "user": _user_name(uid),
            "action": action,
            **fields,
        }
        sudo_user = os.environ.get("SUDO_USER")
        if sudo_user:
            record["sudo_user"] = sudo_user[:64]
        fd = os.open(
            self.path / AUDIT, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def audit_records(self) -> list[dict[str, object]]:
        try:
            lines = (self.path / AUDIT).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]
