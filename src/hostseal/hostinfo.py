"""What ``hostseal tpm info`` reports: the TPM's facts, the platform's Secure Boot and DRTM
state, and every failed prerequisite with its remedy (the counterpart of ESXi's
``esxcli hardware trustedboot get``).

Secure Boot comes from the UEFI variable in efivarfs when the TPM is the host's own device, and
from the measured boot (the event log) otherwise, for example for a lab host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostseal.errors import HostsealError
from hostseal.measure import parse_event_log, secure_boot_state
from hostseal.tpm import Problem, Tcti, Tpm, TpmFacts, TpmUnavailable

EFIVARS = Path("/sys/firmware/efi/efivars")
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
DRTM_PCR = 17


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


def secure_boot_from_eventlog(path: Path) -> SecureBoot:
    try:
        data = path.read_bytes()
    except OSError as err:
        return SecureBoot(None, "unknown", f"no event log at {path} ({err.strerror})")
    try:
        state = secure_boot_state(parse_event_log(data))
    except HostsealError as err:
        return SecureBoot(None, "eventlog", f"the event log at {path} is unreadable: {err}")
    return SecureBoot(state, "eventlog", str(path))


def _secure_boot(tcti: Tcti, eventlog: Path, efivars: Path) -> SecureBoot:
    secure_boot = None
    if not tcti.is_software:
        secure_boot = secure_boot_from_efivars(efivars)
    if secure_boot is None:
        secure_boot = secure_boot_from_eventlog(eventlog)
    return secure_boot


def collect(tpm: Tpm, eventlog: Path, efivars: Path = EFIVARS) -> HostInfo:
    facts = tpm.facts()
    secure_boot = _secure_boot(tpm.tcti, eventlog, efivars)
    drtm: bool | None = None
    if facts.sha256_active:
        pcr17 = tpm.pcr_read("sha256", [DRTM_PCR])[DRTM_PCR]
        # PCRs 17-22 reset to all ones; only a dynamic launch (Intel TXT, AMD SKINIT) resets
        # them to zero and extends them.
        drtm = pcr17 != b"\xff" * len(pcr17)
    lockout = tpm.in_lockout()
    problems = _problems(facts, secure_boot, lockout)
    return HostInfo(str(tpm.tcti), facts, secure_boot, drtm, lockout, problems)


def without_tpm(
    tcti: Tcti, unavailable: TpmUnavailable, eventlog: Path, efivars: Path = EFIVARS
) -> NoTpm:
    """The report when no TPM answers at ``tcti``: "TPM present: no", a failed prerequisite
    saying why and what to do, and what can be known without a TPM (Secure Boot)."""
    secure_boot = _secure_boot(tcti, eventlog, efivars)
    absent = Problem("tpm-present", unavailable.message, unavailable.remedy)
    return NoTpm(str(tcti), secure_boot, [absent, *_secure_boot_problems(secure_boot)])


def _problems(facts: TpmFacts, secure_boot: SecureBoot, lockout: bool) -> list[Problem]:
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
