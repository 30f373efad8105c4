"""The record of a real-firmware lab host (``<lab dir>/<name>/host.json``, ``"kind": "vm"``):
its files, sockets and settings. The operations are in :mod:`hostseal.lab.vm`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hostseal import swtpmproc
from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write
from hostseal.lab.host import _check_name

DEFAULT_BANKS = ("sha1", "sha256")


class VmError(HostsealError):
    """A real-firmware lab host could not be started, reached or changed."""


@dataclass
class VmHost:
    """A real-firmware lab host, as recorded in its ``host.json``."""

    name: str
    path: Path
    image: str  # the cached base disk the overlay sits on
    kernel_version: str
    ssh_port: int = 0
    guest_port: int | None = None  # 10.0.2.100:<port> in the guest -> 127.0.0.1:<port>
    secure_boot: bool = True
    linuxefi: bool = True  # grub's linuxefi/initrdefi (an event log even with Secure Boot off)
    cmdline: str = ""  # added after root=... ro console=ttyS0
    banks: tuple[str, ...] = DEFAULT_BANKS
    memory_mib: int = 1024
    cpus: int = 1
    boots: int = 0
    tpm_generation: int = 1
    console_offset: int = 0  # where the current boot's output starts in console.log

    kind = "vm"

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    @property
    def vars(self) -> Path:
        return self.path / "vars.fd"

    @property
    def tpm_dir(self) -> Path:
        return self.path / "tpm"

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def sockets(self) -> Path:
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"hostseal-lab-{os.getuid()}" / digest

    @property
    def swtpm_socket(self) -> Path:
        return self.sockets / "swtpm.sock"

    @property
    def serial_socket(self) -> Path:
        return self.sockets / "serial.sock"

    @property
    def qmp_socket(self) -> Path:
        return self.sockets / "qmp.sock"

    @property
    def ssh_key(self) -> Path:
        return self.path.parent / "ssh_key"

    @property
    def running(self) -> bool:
        return qemu_pid(self) is not None

    def to_dict(self) -> dict[str, object]:
        record = asdict(self)
        record["path"] = str(self.path)
        record["banks"] = list(self.banks)
        record["kind"] = self.kind
        record["running"] = self.running
        record["ssh"] = f"ssh -i {self.ssh_key} -p {self.ssh_port} root@127.0.0.1"
        return record

    def save(self) -> None:
        record = self.to_dict()
        del record["running"], record["ssh"]
        atomic_write(self.path / "host.json", json.dumps(record, indent=2).encode(), mode=0o644)


def is_vm(lab_dir: Path, name: str) -> bool:
    """Whether lab host ``name`` exists and is a real-firmware (VM) host."""
    _check_name(name)
    try:
        record = json.loads((lab_dir / name / "host.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("kind") == "vm"


def load(lab_dir: Path, name: str) -> VmHost:
    """The VM host ``name``; :class:`VmError` if there is none."""
    if not is_vm(lab_dir, name):
        raise VmError(
            f"There is no real-firmware lab host {name!r} in {lab_dir}.",
            f"Start one with: hostseal lab start {name} --firmware ovmf",
        )
    record = json.loads((lab_dir / name / "host.json").read_text())
    try:
        return _from_record(lab_dir, name, record)
    except (KeyError, TypeError, ValueError) as err:
        raise VmError(
            f"The record of lab host {name!r} ({lab_dir / name / 'host.json'}) is damaged "
            f"({type(err).__name__}: {err}).",
            f"Delete {lab_dir / name} (after killing any QEMU of it) and start the host again.",
        ) from None


def _from_record(lab_dir: Path, name: str, record: dict[str, object]) -> VmHost:
    r: dict[str, Any] = record
    return VmHost(
        name=name,
        path=lab_dir / name,
        image=str(r["image"]),
        kernel_version=str(r["kernel_version"]),
        ssh_port=int(r["ssh_port"]),
        guest_port=None if r.get("guest_port") is None else int(r["guest_port"]),
        secure_boot=bool(r["secure_boot"]),
        linuxefi=bool(r["linuxefi"]),
        cmdline=str(r["cmdline"]),
        banks=tuple(r["banks"]),
        memory_mib=int(r["memory_mib"]),
        cpus=int(r["cpus"]),
        boots=int(r["boots"]),
        tpm_generation=int(r["tpm_generation"]),
        console_offset=int(r["console_offset"]),
    )


def current(host: VmHost) -> VmHost:
    """The host's record as it is on disk now: a reboot changes where its console output
    starts (and may change its SSH port), so a record held from before must not be trusted
    for those. Falls back to ``host`` if the record is gone."""
    try:
        return load(host.path.parent, host.name)
    except HostsealError:
        return host


def list_hosts(lab_dir: Path) -> list[VmHost]:
    if not lab_dir.is_dir():
        return []
    return [
        load(lab_dir, p.name)
        for p in sorted(lab_dir.iterdir())
        if (p / "host.json").is_file() and is_vm(lab_dir, p.name)
    ]


def _pid_from(pidfile: Path, marker: bytes) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if marker in cmdline and swtpmproc.alive(pid) else None


def qemu_pid(host: VmHost) -> int | None:
    return _pid_from(host.path / "qemu.pid", str(host.disk.resolve()).encode())
