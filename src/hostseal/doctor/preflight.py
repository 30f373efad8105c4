"""Would the sealed configuration unlock on this boot? Answered before any unlock is tried.

The comparisons are the ones :mod:`hostseal.secureconfig.diagnose` makes after a failed unlock,
made beforehand and without touching anything:

1. a TPM answers (else: ``tpm-unavailable``);
2. its endorsement-key fingerprint is the one sealed to (else: ``tpm-replaced``);
3. the current values of the sealed PCRs are the sealed values (else: ``secure-boot`` when PCR 7
   changed because Secure Boot went off, ``pcr-policy`` otherwise), and the events that changed
   are named by diffing the bundle's seal-time event log (``seal-eventlog.bin``) against this
   boot's;
4. the requirements hold on this boot's measured boot (else: ``secure-boot`` or
   ``requirements``);
5. when all of that says "will unlock", the TPM is asked (the *probe*): the sealed object is
   loaded and unsealed exactly as an unlock does, and the key is dropped at once. That is the
   only way to see that the TPM was *cleared* (same endorsement key, new storage seed), which
   no offline comparison can show (``tpm-cleared``).

The probe changes nothing on disk or in the TPM's persistent state: the storage primary, the
loaded object and the policy session are transient and flushed, no NV index is written, and a
PCR policy that is not satisfied does not count towards dictionary-attack lockout. It runs only
when everything predicts success, and can be turned off (the verdict then says the TPM was not
asked). This module is pure: :mod:`hostseal.doctor.observe` gathers the values and runs the
probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hostseal.errors import HostsealError
from hostseal.measure import EventLog, EventLogError, LogChange, diff_logs, parse_event_log
from hostseal.secureconfig.bundle_file import SEAL_EVENTLOG_MEMBER
from hostseal.secureconfig.info import Mode
from hostseal.secureconfig.requirements import SECURE_BOOT_PCR, unmet
from hostseal.secureconfig.store import Bundle

WILL_UNLOCK = "will unlock"
WILL_NOT_UNLOCK = "will not unlock"
UNKNOWN = "unknown"
NOT_APPLICABLE = "no sealed configuration"

PROBE_OK = "ok"
PROBE_WRONG_TPM = "wrong-tpm"
PROBE_POLICY = "policy"


@dataclass(frozen=True)
class Probe:
    """What the TPM said when asked to unseal: ``ok``, ``wrong-tpm``, ``policy``, or an error."""

    outcome: str
    error: HostsealError | None = None


@dataclass
class Preflight:
    """The verdict, the reason id (for the knowledge base), and the causes in plain words."""

    verdict: str
    reason: str | None = None
    causes: list[str] = field(default_factory=list)
    changed_pcrs: list[int] = field(default_factory=list)
    changes: list[dict[str, object]] = field(default_factory=list)
    probed: bool = False
    error: HostsealError | None = None

    @property
    def will_unlock(self) -> bool | None:
        return {WILL_UNLOCK: True, WILL_NOT_UNLOCK: False}.get(self.verdict)

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "will_unlock": self.will_unlock,
            "reason": self.reason,
            "causes": self.causes,
            "changed_pcrs": self.changed_pcrs,
            "changes": self.changes,
            "tpm_probed": self.probed,
        }


def _short(value: str | bytes) -> str:
    text = value.hex() if isinstance(value, bytes) else value
    return text[:16] + "…"


def sealed_values(bundle: Bundle) -> dict[int, bytes]:
    """The PCR values the key was sealed to, from ``seal_boot_summary``."""
    raw = bundle.info.seal_boot_summary.get("sealed_pcr_values", {})
    values: dict[int, bytes] = {}
    if isinstance(raw, dict):
        for pcr, value in raw.items():
            try:
                values[int(pcr)] = bytes.fromhex(str(value))
            except ValueError:
                continue
    return values


def assess(
    bundle: Bundle | None,
    *,
    tpm_error: HostsealError | None,
    ek_fingerprint: str | None,
    current_pcrs: Mapping[int, bytes] | None,
    boot: EventLog | None,
    boot_error: str | None = None,
    probe: Probe | None = None,
) -> Preflight:
    """The verdict from what was observed; ``probe`` is the TPM's answer, if it was asked."""
    if bundle is None:
        return Preflight(NOT_APPLICABLE)
    info = bundle.info
    if info.mode is Mode.NONE or info.tpm_slot is None:
        return Preflight(
            WILL_UNLOCK,
            causes=["Mode NONE: the key is derived from the bootbank itself; no TPM is asked."],
        )
    slot = info.tpm_slot
    if tpm_error is not None:
        return Preflight(
            WILL_NOT_UNLOCK,
            "tpm-unavailable",
            [f"No TPM is available ({tpm_error.message})"],
        )
    if ek_fingerprint is not None and ek_fingerprint != slot.tpm_ek_fingerprint:
        return Preflight(
            WILL_NOT_UNLOCK,
            "tpm-replaced",
            [
                "This is not the TPM the configuration was sealed to: sealed to the TPM with "
                f"endorsement key {_short(slot.tpm_ek_fingerprint)}, this host's TPM is "
                f"{_short(ek_fingerprint)} (the TPM or the system board was replaced, or the "
                "disk comes from another host)."
            ],
        )
    result = Preflight(WILL_UNLOCK)
    expected = sealed_values(bundle)
    if current_pcrs is not None:
        result.changed_pcrs = sorted(p for p, v in expected.items() if current_pcrs.get(p) != v)
    problems = unmet(info.requirements, boot) if boot is not None else []
    secure_boot_off = any(p.requirement == "secure-boot" for p in problems)
    for problem in problems:
        result.causes.append(f"{problem.reason}, but this configuration requires it.")
    if result.changed_pcrs:
        for change in _changes(bundle, boot, result.changed_pcrs, result.causes):
            result.changes.append(change.to_dict())
            result.causes.append(change.message)
            if change.pcr == SECURE_BOOT_PCR and change.kind.startswith("secure_boot_"):
                secure_boot_off = secure_boot_off or change.kind == "secure_boot_disabled"
        for pcr in result.changed_pcrs:
            now = current_pcrs.get(pcr, b"") if current_pcrs is not None else b""
            result.causes.append(
                f"PCR {pcr} changed: sealed {_short(expected[pcr])}, now {_short(now)}"
            )
    if boot is None:
        result.causes.append(
            f"This boot's event log is unavailable ({boot_error or 'not read'}): the unlock "
            "reads it to check the requirements, so it fails too."
        )
    if result.changed_pcrs or problems or boot is None:
        result.verdict = WILL_NOT_UNLOCK
        # The most telling reason first: an unmet requirement explains the PCR that changed.
        if secure_boot_off:
            result.reason = "secure-boot"
        elif problems:
            result.reason = "requirements"
        elif result.changed_pcrs:
            result.reason = "pcr-policy"
        else:
            result.reason = "eventlog"
        return result
    return _with_probe(result, probe, slot.pcrs)


def _changes(
    bundle: Bundle, boot: EventLog | None, changed: list[int], causes: list[str]
) -> list[LogChange]:
    if boot is None:
        return []
    sealed_raw = bundle.extras.get(SEAL_EVENTLOG_MEMBER)
    if sealed_raw is None:
        causes.append(
            "The bundle holds no seal-time event log, so the changed events can't be named."
        )
        return []
    try:
        sealed_log = parse_event_log(sealed_raw)
    except EventLogError as err:
        causes.append(f"The seal-time event log cannot be compared: {err.message}")
        return []
    return [c for c in diff_logs(sealed_log, boot) if c.pcr in changed]


def _with_probe(result: Preflight, probe: Probe | None, pcrs: list[int]) -> Preflight:
    sealed_to = f"PCRs {', '.join(map(str, pcrs))}" if pcrs else "this TPM only"
    if probe is None:
        result.causes.append(
            f"Same TPM, sealed {sealed_to} unchanged, requirements met. The TPM itself was not "
            "asked, so a cleared TPM would not show here."
        )
        return result
    result.probed = True
    if probe.outcome == PROBE_OK:
        result.causes.append(
            f"Same TPM, sealed {sealed_to} unchanged, requirements met, and the TPM released "
            "the key when asked (the key was dropped at once)."
        )
    elif probe.outcome == PROBE_WRONG_TPM:
        result.verdict, result.reason = WILL_NOT_UNLOCK, "tpm-cleared"
        result.causes.append(
            "The TPM was cleared since the configuration was sealed: it has the same "
            "endorsement key but a new storage seed, so the sealed key no longer loads."
        )
    elif probe.outcome == PROBE_POLICY:
        result.verdict, result.reason = WILL_NOT_UNLOCK, "pcr-policy"
        result.causes.append(
            "The TPM refused the PCR policy although the recorded PCR values match: the "
            "sealed values recorded in encryption.info are not the ones the key was sealed to."
        )
    else:
        error = probe.error
        result.verdict, result.error = UNKNOWN, error
        result.reason = "lockout" if type(error).__name__ == "TpmLockout" else "tpm-error"
        result.causes.append(
            "The TPM could not be asked to release the key: "
            + (error.message if error is not None else probe.outcome)
        )
    return result
