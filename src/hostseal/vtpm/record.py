"""A vTPM's record (``vtpm.json``, format version 1) and its run-time file (``run.json``).

The record holds no secret: the key record names the provider and key id (for the native
provider, the key wrapped by the provider's KEK), with a key check value; the EK certificates
are public.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hostseal.fsutil import atomic_write
from hostseal.vtpm.errors import VtpmError, VtpmNotFound

FORMAT = "hostseal-vtpm"
VERSION = 1
CIPHER = "aes-256-cbc"
# swtpm's state key is derived from the data key as swtpm derives it from a passphrase
# (PBKDF2-HMAC-SHA512, salt "swtpm", 1000 rounds): libvirt, given the data key as the value of
# the <encryption secret=...> secret, opens the same state.
STATE_KEY_KDF = "pbkdf2-sha512-swtpm"


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass
class VtpmRecord:
    name: str
    uuid: str
    key: dict[str, Any]
    created: str = field(default_factory=now)
    pcr_banks: list[str] = field(default_factory=lambda: ["sha256"])
    ek_certificates: dict[str, str] = field(default_factory=dict)  # kind -> base64 DER
    ca_fingerprint: str = ""
    origin: dict[str, Any] = field(default_factory=lambda: {"kind": "created"})
    cipher: str = CIPHER
    state_key_kdf: str = STATE_KEY_KDF

    @property
    def provider(self) -> str:
        return str(self.key.get("provider", ""))

    @property
    def key_id(self) -> str:
        return str(self.key.get("key_id", ""))

    def ek_certificate(self, kind: str) -> bytes | None:
        value = self.ek_certificates.get(kind)
        return base64.b64decode(value) if value else None

    def ek_fingerprints(self) -> dict[str, str]:
        return {
            kind: hashlib.sha256(base64.b64decode(der)).hexdigest()
            for kind, der in self.ek_certificates.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VtpmRecord:
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise VtpmError(
                f"This vTPM record is not a {FORMAT} version {VERSION} record "
                f"(format {data.get('format')!r}, version {data.get('version')!r}).",
                "Use the hostseal version that wrote it.",
            )
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        try:
            return cls(**fields)
        except TypeError as err:
            raise VtpmError(
                f"The vTPM record is damaged ({err}).", "Restore it from a backup."
            ) from None

    def save(self, vm_dir: Path) -> None:
        atomic_write(vm_dir / "vtpm.json", json.dumps(self.to_dict(), indent=2).encode(), 0o600)


def load(vm_dir: Path) -> VtpmRecord:
    try:
        data = json.loads((vm_dir / "vtpm.json").read_text())
    except FileNotFoundError:
        raise VtpmNotFound(
            f"There is no vTPM {vm_dir.name!r} (in {vm_dir.parent}).",
            f"Create one with: hostseal vtpm create {vm_dir.name} (see hostseal vtpm list).",
        ) from None
    except (OSError, ValueError) as err:
        raise VtpmError(
            f"The record of vTPM {vm_dir.name!r} ({vm_dir / 'vtpm.json'}) is unreadable: {err}.",
            "Run hostseal as root; if it is damaged, restore the vTPM from a backup.",
        ) from None
    return VtpmRecord.from_dict(data)


@dataclass
class Runtime:
    """How a running vTPM is reached."""

    transport: str  # "unix" (QEMU/libvirt control socket) or "tcp" (TCTI port pair)
    socket: str = ""
    port: int = 0
    ctrl_port: int = 0
    started: str = field(default_factory=now)

    @property
    def tcti(self) -> str | None:
        return f"swtpm:host=127.0.0.1,port={self.port}" if self.transport == "tcp" else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tcti": self.tcti}

    def save(self, vm_dir: Path) -> None:
        atomic_write(vm_dir / "run.json", json.dumps(self.to_dict(), indent=2).encode(), 0o600)

    @classmethod
    def load(cls, vm_dir: Path) -> Runtime | None:
        try:
            data = json.loads((vm_dir / "run.json").read_text())
        except (OSError, ValueError):
            return None
        data.pop("tcti", None)
        try:
            return cls(**data)
        except TypeError:
            return None
