"""Lab hosts: a software TPM (swtpm) plus the firmware simulation, driven like a real host.

Each host lives in ``<lab dir>/<name>/``:

* ``host.json``   -- ports, PCR banks, the current boot settings, counters;
* ``tpm/``        -- swtpm's state (its seeds: a new directory is a new TPM);
* ``eventlog.bin``-- the event log of the current boot (what ``HOSTSEAL_EVENTLOG`` points at);
* ``swtpm.pid``, ``swtpm.log``.

Operations: :func:`start`, :func:`reboot` (power cycle: PCRs reset, the new boot measured),
:func:`replace_tpm` (fresh swtpm state: new EK, new seeds), :func:`clear_tpm` (TPM2_Clear then
reboot), :func:`stop`, :func:`destroy`, :func:`list_hosts`, :func:`env_lines`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hostseal import swtpmproc
from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write
from hostseal.lab.firmware import LAB_BANKS, BootConfig, measure_boot

DEFAULT_BANKS = ("sha1", "sha256")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: no trailing newline


class LabError(HostsealError):
    """A lab host could not be started, found or changed."""


@dataclass
class LabHost:
    """A simulated host, as recorded in its ``host.json``."""

    name: str
    path: Path
    port: int = 0
    ctrl_port: int = 0
    banks: tuple[str, ...] = DEFAULT_BANKS
    boot: BootConfig = field(default_factory=BootConfig)
    boots: int = 0
    tpm_generation: int = 1

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def eventlog(self) -> Path:
        return self.path / "eventlog.bin"

    @property
    def tpm_dir(self) -> Path:
        return self.path / "tpm"

    @property
    def running(self) -> bool:
        return _swtpm_pid(self) is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "running": self.running,
            "tcti": self.tcti,
            "eventlog": str(self.eventlog),
            "port": self.port,
            "ctrl_port": self.ctrl_port,
            "banks": list(self.banks),
            "boot": self.boot.to_dict(),
            "boots": self.boots,
            "tpm_generation": self.tpm_generation,
        }

    def save(self) -> None:
        record = self.to_dict()
        del record["running"]
        atomic_write(self.path / "host.json", json.dumps(record, indent=2).encode(), mode=0o644)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise LabError(
            f"{name!r} is not a valid lab host name.",
            "Use letters, digits, '.', '_' or '-' (at most 63 characters).",
        )


def load(lab_dir: Path, name: str) -> LabHost:
    """The lab host ``name``; :class:`LabError` if there is none."""
    _check_name(name)
    path = lab_dir / name
    try:
        record = json.loads((path / "host.json").read_text())
    except FileNotFoundError:
        raise LabError(
            f"There is no lab host {name!r} in {lab_dir}.",
            f"Start one with: hostseal lab start {name}",
        ) from None
    except (OSError, ValueError) as err:
        raise LabError(
            f"The record of lab host {name!r} ({path / 'host.json'}) is unreadable: {err}.",
            f"Remove it with: hostseal lab stop {name} --remove, then start it again.",
        ) from None
    if record.get("kind") == "vm":
        raise LabError(
            f"Lab host {name!r} is a real-firmware host (a VM), not a simulated one.",
            "Use the real-firmware operations (hostseal.lab.vm), or another name.",
        )
    return LabHost(
        name=name,
        path=path,
        port=int(record["port"]),
        ctrl_port=int(record["ctrl_port"]),
        banks=tuple(record.get("banks", DEFAULT_BANKS)),
        boot=BootConfig.from_dict(record.get("boot", {})),
        boots=int(record.get("boots", 0)),
        tpm_generation=int(record.get("tpm_generation", 1)),
    )


def list_hosts(lab_dir: Path) -> list[LabHost]:
    """The simulated hosts (real-firmware ones are listed by :func:`hostseal.lab.vm.list_hosts`)."""
    if not lab_dir.is_dir():
        return []
    return [
        load(lab_dir, p.name)
        for p in sorted(lab_dir.iterdir())
        if (p / "host.json").is_file() and _kind(p) != "vm"
    ]


def _kind(path: Path) -> str:
    """``vm`` for a real-firmware host's record, else ``sim`` (also for an unreadable one,
    which :func:`load` then reports)."""
    try:
        record = json.loads((path / "host.json").read_text())
    except (OSError, ValueError):
        return "sim"
    return "vm" if isinstance(record, dict) and record.get("kind") == "vm" else "sim"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One lab operation at a time per host."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- swtpm processes -------------------------------------------------------------------------


def _swtpm_pid(host: LabHost) -> int | None:
    """The pid of this host's swtpm, if it is alive."""
    return swtpmproc.pid_of(host.path / "swtpm.pid", host.tpm_dir)


def _require(tool: str) -> str:
    return swtpmproc.require(tool, "lab hosts")


def _manufacture_tpm(host: LabHost) -> None:
    """A new TPM: fresh swtpm state with the host's PCR banks (new seeds, new EK)."""
    if host.tpm_dir.exists():
        shutil.rmtree(host.tpm_dir)
    host.tpm_dir.mkdir(parents=True, mode=0o700)
    result = subprocess.run(
        [
            _require("swtpm_setup"),
            "--tpm2",
            "--tpmstate",
            str(host.tpm_dir),
            "--pcr-banks",
            ",".join(host.banks),
            "--overwrite",
            "--logfile",
            str(host.path / "swtpm_setup.log"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(
            f"swtpm_setup failed for lab host {host.name!r}: "
            f"{(result.stderr or result.stdout).strip()[-400:]}",
            f"See {host.path / 'swtpm_setup.log'}.",
        )


def _launch_swtpm(host: LabHost) -> None:
    swtpm = _require("swtpm")
    last_error = ""
    for attempt in range(6):
        # A rebooted host keeps its TPM's address when it can, as a real one does.
        if attempt > 0 or not host.port or not swtpmproc.port_pair_free(host.port):
            host.port, host.ctrl_port = swtpmproc.free_port_pair()
        pidfile = host.path / "swtpm.pid"
        pidfile.unlink(missing_ok=True)
        result = subprocess.run(
            [
                swtpm,
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={host.tpm_dir}",
                "--server",
                f"type=tcp,port={host.port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={host.ctrl_port},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
                "--pid",
                f"file={pidfile}",
                "--log",
                f"file={host.path / 'swtpm.log'},level=1",
                "--daemon",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 and _wait_listening(host.port):
            return
        last_error = (result.stderr or result.stdout).strip()[-400:]
        _kill(host)
    raise LabError(
        f"swtpm did not start for lab host {host.name!r}: {last_error or 'no answer'}",
        f"See {host.path / 'swtpm.log'}.",
    )


def _wait_listening(port: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.02)
    return False


def _kill(host: LabHost) -> None:
    pid = _swtpm_pid(host)
    if pid is not None:
        swtpmproc.kill(pid)
    (host.path / "swtpm.pid").unlink(missing_ok=True)


def _boot(host: LabHost) -> None:
    """Measure the host's boot into its TPM and write the matching event log."""
    from hostseal.tpm import open_tpm  # tpm2_pytss: only when a boot is measured

    log, extends = measure_boot(host.boot, host.banks)
    with open_tpm(host.tcti) as tpm:
        for extend in extends:
            tpm.pcr_extend(extend.pcr, extend.digests)
    atomic_write(host.eventlog, log, mode=0o644)
    host.boots += 1
    host.save()


def _power_on(host: LabHost) -> None:
    _launch_swtpm(host)
    try:
        _boot(host)
    except BaseException:
        _kill(host)
        raise


# -- operations ------------------------------------------------------------------------------


def check_banks(banks: tuple[str, ...]) -> None:
    """Raise :class:`LabError` unless ``banks`` are PCR banks a lab TPM can have."""
    for bank in banks:
        if bank not in LAB_BANKS:
            raise LabError(f"Unknown PCR bank {bank!r}.", f"Use {banks_text()}.")
    if not banks:
        raise LabError("No PCR bank given.", f"Use {banks_text()}.")


def banks_text() -> str:
    """``sha1, sha256, sha384 or sha512``: the banks a lab TPM can have, for messages."""
    return ", ".join(LAB_BANKS[:-1]) + " or " + LAB_BANKS[-1]


def start(
    lab_dir: Path,
    name: str,
    boot: BootConfig | None = None,
    banks: tuple[str, ...] = DEFAULT_BANKS,
) -> LabHost:
    """Create (first time) or power on a lab host and measure its boot."""
    _check_name(name)
    check_banks(banks)
    path = lab_dir / name
    with _locked(path):
        if (path / "host.json").is_file():
            host = load(lab_dir, name)
            if host.running:
                raise LabError(
                    f"Lab host {name!r} is already running.",
                    f"Use: hostseal lab reboot {name} (or stop it first).",
                )
            if boot is not None:
                host.boot = boot
        else:
            host = LabHost(name=name, path=path, banks=banks, boot=boot or BootConfig())
            _manufacture_tpm(host)
        _power_on(host)
        return host


def reboot(lab_dir: Path, name: str, boot: BootConfig | None = None) -> LabHost:
    """Power-cycle: the TPM restarts (PCRs reset) and the (possibly changed) boot is measured."""
    host = load(lab_dir, name)
    with _locked(host.path):
        _kill(host)
        if boot is not None:
            host.boot = boot
        _power_on(host)
        return host


def replace_tpm(lab_dir: Path, name: str) -> LabHost:
    """Swap the TPM (as with a system board): new swtpm state, new EK and seeds, then boot."""
    host = load(lab_dir, name)
    with _locked(host.path):
        _kill(host)
        _manufacture_tpm(host)
        host.tpm_generation += 1
        _power_on(host)
        return host


def clear_tpm(lab_dir: Path, name: str) -> LabHost:
    """TPM2_Clear (as the firmware's "clear TPM" does), then the reboot that follows it."""
    host = load(lab_dir, name)
    with _locked(host.path):
        if not host.running:
            raise LabError(f"Lab host {name!r} is not running.", f"hostseal lab start {name}")
        from hostseal.tpm import open_tpm

        with open_tpm(host.tcti) as tpm:
            tpm.clear()
        _kill(host)
        _power_on(host)
        return host


def stop(lab_dir: Path, name: str) -> LabHost:
    """Power off (the TPM's state is kept; start powers it on again)."""
    host = load(lab_dir, name)
    with _locked(host.path):
        _kill(host)
        return host


def destroy(lab_dir: Path, name: str) -> None:
    """Power off and delete the host with its TPM."""
    host = load(lab_dir, name)
    _kill(host)
    shutil.rmtree(host.path)


def env_lines(host: LabHost) -> list[str]:
    """Shell ``export`` lines that point every hostseal command at this host."""
    import shlex

    return [
        f"export HOSTSEAL_TCTI={shlex.quote(host.tcti)}",
        f"export HOSTSEAL_EVENTLOG={shlex.quote(str(host.eventlog))}",
    ]
