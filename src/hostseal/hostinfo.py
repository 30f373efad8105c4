"""What ``hostseal tpm info`` reports: the TPM's facts, the platform's Secure Boot and DRTM
state, and every failed prerequisite with its remedy (the counterpart of ESXi's
``esxcli hardware trustedboot get``).

Secure Boot comes from the UEFI variable in efivarfs when the TPM is the host's own device, and
from the measured boot (the event log) otherwise, for example for a lab host.

This boot's event log is a platform fact too, and the one place that says what its absence
means (:func:`read_eventlog`, :class:`NoEventLog`): the agent and the doctor use it as well.
Debian's GRUB ``linux`` command with Secure Boot off boots the kernel without its EFI stub, and
the kernel then has no log at all (docs/REALBOOT: obstacle 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hostseal.errors import HostsealError
from hostseal.measure import EventLog, parse_event_log, secure_boot_state
from hostseal.settings import DEFAULT_EVENTLOG
from hostseal.tpm import Problem, Tcti, TpmFacts, TpmUnavailable

if TYPE_CHECKING:
    from hostseal.tpm import Tpm

EFIVARS = Path("/sys/firmware/efi/efivars")
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
DEV = Path("/dev")
DRTM_PCR = 17

_EFI_STUB = (
    "boot the kernel through its EFI stub, which hands the firmware's log to the kernel: in GRUB "
    "use linuxefi and initrdefi instead of linux and initrd, or turn Secure Boot on (Debian's "
    "GRUB then boots through the stub)"
)
_UNATTESTABLE = (
    "Without it, what booted (Secure Boot, boot loader, kernel) cannot be shown or attested: "
    "the PCRs can be read, but nothing says what was measured into them."
)


class NoEventLog(HostsealError):
    """This boot left no TCG event log where hostseal looks for it."""


class EventLogUnreadable(HostsealError):
    """The event log is there but cannot be read (permissions, I/O)."""


def no_eventlog(path: Path, why: str = "does not exist") -> NoEventLog:
    """The error for a boot without an event log at ``path``: the firmware left none when
    ``path`` is the kernel's own file, else the file named is not there."""
    if path == DEFAULT_EVENTLOG:
        return NoEventLog(
            f"The firmware left no TCG event log for this boot: {path} {why}. {_UNATTESTABLE}",
            f"{_EFI_STUB[0].upper()}{_EFI_STUB[1:]}. If /sys/kernel/security is empty, mount "
            "securityfs: mount -t securityfs securityfs /sys/kernel/security.",
        )
    return NoEventLog(
        f"No TCG event log for this boot at {path}: the file {why}. {_UNATTESTABLE}",
        f"Point --eventlog / HOSTSEAL_EVENTLOG at this boot's log (the kernel's is "
        f"{DEFAULT_EVENTLOG}). If the kernel has none either, the firmware left none: "
        f"{_EFI_STUB}.",
    )


def read_eventlog(path: Path) -> bytes:
    """This boot's event log as bytes; :class:`NoEventLog` when there is none (no file, or an
    empty one), :class:`EventLogUnreadable` when it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise no_eventlog(path) from None
    except OSError as err:
        raise EventLogUnreadable(
            f"Cannot read the measured-boot event log {path}: {err.strerror or err}.",
            f"Run as root (the kernel's log, {DEFAULT_EVENTLOG}, is readable by root only), or "
            "point --eventlog / HOSTSEAL_EVENTLOG at a copy of this boot's log.",
        ) from None
    if not data:
        raise no_eventlog(path, "is empty")
    return data


@dataclass(frozen=True)
class EventLogFacts:
    """This boot's event log as ``tpm info`` reports it: there or not, how many events, and
    the reason when it is missing or unreadable (``problem``)."""

    path: Path
    present: bool
    events: int | None = None
    detail: str = ""
    log: EventLog | None = field(default=None, compare=False, repr=False)
    problem: Problem | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "present": self.present,
            "events": self.events,
            "detail": self.detail,
        }


def eventlog_facts(path: Path) -> EventLogFacts:
    """Read and parse the event log at ``path``; never raises: what went wrong is the problem."""
    try:
        data = read_eventlog(path)
    except NoEventLog as err:
        gone = "none (the firmware left no TCG event log)" if path == DEFAULT_EVENTLOG else ""
        detail = gone or f"none (no file at {path})"
        return EventLogFacts(path, False, None, detail, problem=_problem(err, "fail"))
    except EventLogUnreadable as err:
        return EventLogFacts(path, True, None, err.message, problem=_problem(err, "warn"))
    try:
        log = parse_event_log(data)
    except HostsealError as err:
        detail = f"the event log at {path} is unreadable: {err}"
        return EventLogFacts(path, True, None, detail, problem=_problem(err, "warn"))
    return EventLogFacts(path, True, len(log.events), f"{len(log.events)} events", log)


def _problem(err: HostsealError, severity: str) -> Problem:
    remedy = err.remedy or "Report the event log (hostseal eventlog show FILE) to the maintainers."
    return Problem("event-log", err.message, remedy, severity)


def kernel_devices(dev: Path = DEV) -> list[str]:
    """The kernel's TPM character devices (``/dev/tpm0``, ``/dev/tpmrm0``...), sorted."""
    try:
        names = [p for p in dev.iterdir() if p.name.startswith("tpm")]
    except OSError:
        return []
    return sorted(str(p) for p in names)


@dataclass(frozen=True)
class SecureBoot:
    enabled: bool | None
    source: str  # "efivars" | "eventlog" | "unknown"
    detail: str = ""


@dataclass(frozen=True)
class HostInfo:
    tcti: str
    tpm: TpmFacts
    secure_boot: SecureBoot
    drtm_launched: bool | None
    in_lockout: bool
    problems: list[Problem] = field(default_factory=list)
    eventlog: EventLogFacts | None = None
    devices: tuple[str, ...] = ()  # the kernel's TPM devices, for a device TCTI

    def _tpm_dict(self) -> dict[str, object]:
        t = self.tpm
        return {
            "present": True,
            "tcti": self.tcti,
            "version": t.family,
            "manufacturer": {"id": t.vendor_id, "name": t.vendor_name},
            "vendor_string": t.vendor_string,
            "firmware_version": t.firmware_version,
            "spec_revision": f"{t.spec_revision / 100:.2f}",
            "kind": t.kind,
            "pcr_banks": {bank: pcrs for bank, pcrs in t.pcr_banks.items()},
            "active_banks": t.active_banks,
            "sha256_active": t.sha256_active,
        }

    def to_dict(self) -> dict[str, object]:
        return {
            **self._tpm_dict(),
            "secure_boot": {
                "enabled": self.secure_boot.enabled,
                "source": self.secure_boot.source,
                "detail": self.secure_boot.detail,
            },
            "drtm": {"launched": self.drtm_launched},
            "dictionary_attack_lockout": self.in_lockout,
            "eventlog": self.eventlog.to_dict() if self.eventlog is not None else None,
            "devices": list(self.devices),
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(frozen=True)
class NoTpm:
    """What ``tpm info`` reports when no TPM answers: "TPM present: no", the reason as the
    first failed prerequisite, and what can be known without a TPM (Secure Boot). The JSON has
    :class:`HostInfo`'s keys, with ``null`` where a TPM would answer."""

    tcti: str
    secure_boot: SecureBoot
    problems: list[Problem] = field(default_factory=list)
    eventlog: EventLogFacts | None = None
    devices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "present": False,
            "tcti": self.tcti,
            "version": None,
            "manufacturer": None,
            "vendor_string": None,
            "firmware_version": None,
            "spec_revision": None,
            "kind": None,
            "pcr_banks": {},
            "active_banks": [],
            "sha256_active": None,
            "secure_boot": {
                "enabled": self.secure_boot.enabled,
                "source": self.secure_boot.source,
                "detail": self.secure_boot.detail,
            },
            "drtm": {"launched": None},
            "dictionary_attack_lockout": None,
            "eventlog": self.eventlog.to_dict() if self.eventlog is not None else None,
            "devices": list(self.devices),
            "problems": [p.to_dict() for p in self.problems],
        }


def secure_boot_from_efivars(efivars: Path = EFIVARS) -> SecureBoot | None:
    """The SecureBoot UEFI variable (4 bytes of attributes, then 0 or 1), if readable."""
    try:
        raw = (efivars / SECURE_BOOT_VAR).read_bytes()
    except OSError:
        return None
    if len(raw) != 5:
        return SecureBoot(None, "efivars", f"unexpected SecureBoot variable of {len(raw)} bytes")
    return SecureBoot(raw[4] == 1, "efivars")


def secure_boot_from_log(eventlog: EventLogFacts | None) -> SecureBoot:
    """Secure Boot as the measured boot recorded it (unknown without a readable log)."""
    if eventlog is None:
        return SecureBoot(None, "unknown", "no event log was read")
    if eventlog.log is None:
        return SecureBoot(None, "eventlog" if eventlog.present else "unknown", eventlog.detail)
    try:
        state = secure_boot_state(eventlog.log)
    except HostsealError as err:
        detail = f"the event log at {eventlog.path} is unreadable: {err}"
        return SecureBoot(None, "eventlog", detail)
    return SecureBoot(state, "eventlog", str(eventlog.path))


def secure_boot_from_eventlog(path: Path) -> SecureBoot:
    return secure_boot_from_log(eventlog_facts(path))


def secure_boot_of(
    tcti: Tcti, eventlog: EventLogFacts | None, efivars: Path = EFIVARS
) -> SecureBoot:
    """Secure Boot from efivars for the host's own TPM (a device TCTI), with or without an
    event log; from the event log otherwise (a software TPM is not this machine's firmware)."""
    secure_boot = None
    if not tcti.is_software:
        secure_boot = secure_boot_from_efivars(efivars)
    return secure_boot or secure_boot_from_log(eventlog)


def _devices(tcti: Tcti, dev: Path) -> tuple[str, ...]:
    return tuple(kernel_devices(dev)) if tcti.device_path is not None else ()


def collect(tpm: Tpm, eventlog: Path, efivars: Path = EFIVARS, dev: Path = DEV) -> HostInfo:
    facts = tpm.facts()
    log = eventlog_facts(eventlog)
    secure_boot = secure_boot_of(tpm.tcti, log, efivars)
    drtm: bool | None = None
    if facts.sha256_active:
        pcr17 = tpm.pcr_read("sha256", [DRTM_PCR])[DRTM_PCR]
        # PCRs 17-22 reset to all ones; only a dynamic launch (Intel TXT, AMD SKINIT) resets
        # them to zero and extends them.
        drtm = pcr17 != b"\xff" * len(pcr17)
    lockout = tpm.in_lockout()
    problems = _problems(facts, secure_boot, lockout, log)
    devices = _devices(tpm.tcti, dev)
    return HostInfo(str(tpm.tcti), facts, secure_boot, drtm, lockout, problems, log, devices)


def without_tpm(
    tcti: Tcti,
    unavailable: TpmUnavailable,
    eventlog: Path,
    efivars: Path = EFIVARS,
    dev: Path = DEV,
) -> NoTpm:
    """The report when no TPM answers at ``tcti``: "TPM present: no", a failed prerequisite
    saying why and what to do, and what can be known without a TPM (Secure Boot, the event
    log; a missing log is no separate problem then: without a TPM there is none to expect)."""
    log = eventlog_facts(eventlog)
    secure_boot = secure_boot_of(tcti, log, efivars)
    absent = Problem("tpm-present", unavailable.message, unavailable.remedy)
    problems = [absent, *_secure_boot_problems(secure_boot)]
    return NoTpm(str(tcti), secure_boot, problems, log, _devices(tcti, dev))


def _problems(
    facts: TpmFacts, secure_boot: SecureBoot, lockout: bool, eventlog: EventLogFacts
) -> list[Problem]:
    problems = []
    if lockout:
        problems.append(
            Problem(
                "lockout",
                "The TPM is in dictionary-attack lockout: it refuses every authorisation.",
                "Wait for the lockout recovery time, or reset it with the lockout "
                "authorization (tpm2_dictionarylockout --clear-lockout).",
            )
        )
    if not facts.sha256_active:
        active = ", ".join(facts.active_banks) or "none"
        problems.append(
            Problem(
                "sha256-bank",
                f"SHA-256 PCR bank not active (active banks: {active}).",
                "Select SHA-256 as the TPM hash algorithm (PCR bank) in the firmware setup.",
            )
        )
    if eventlog.problem is not None:
        problems.append(eventlog.problem)
    return problems + _secure_boot_problems(secure_boot)


def _secure_boot_problems(secure_boot: SecureBoot) -> list[Problem]:
    problems = []
    if secure_boot.enabled is False:
        problems.append(
            Problem(
                "secure-boot",
                "UEFI Secure Boot is disabled.",
                "Enable Secure Boot in the firmware setup; a configuration that requires it "
                "will not unlock, and attestation reports 'Host secure boot was disabled'.",
            )
        )
    elif secure_boot.enabled is None:
        problems.append(
            Problem(
                "secure-boot",
                f"The Secure Boot state could not be read: {secure_boot.detail}.",
                "Boot in UEFI mode with efivarfs mounted, or point --eventlog / "
                "HOSTSEAL_EVENTLOG at the measured-boot event log.",
                severity="warn",
            )
        )
    return problems
