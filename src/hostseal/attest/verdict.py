"""Judge verified evidence against a reference policy: Passed, Failed or Warning, with the
messages an operator reads in the host's attestation status (as vSphere's Monitor > Security
shows them) and findings with stable ids for programs.

:func:`evaluate` trusts its inputs: the PCR values come from a verified quote and the event log
was replayed against them (:mod:`hostseal.attest.quote` does both). It reads events only from
PCRs present in those values, since events of unquoted PCRs prove nothing.

Finding ids (``Finding.id``), stable for alarms and scripts:

================================  ============================================================
``pcr_not_quoted``                the evidence lacks PCRs the policy checks
``pcr_mismatch``                  a PCR differs from the policy's value (``pcr`` says which)
``secure_boot_disabled``          Secure Boot is off, the policy requires it on
``secure_boot_unknown``           Secure Boot state not in / not readable from the event log
``boot_application_not_allowed``  a boot application's digest is not in the allow-list
``boot_applications_unknown``     the log has no SHA-256 digests to check applications with
``kernel_cmdline_not_allowed``    the kernel command line is not one the policy allows
``kernel_cmdline_missing_setting``  the command line lacks a setting the policy requires
``kernel_cmdline_unknown``        no kernel command line in the event log, or none whose
                                  digest covers its text
``event_data_forged``             an event's data does not match its measured digest (in some
                                  bank): the log was altered (``event``/``pcr`` say which)
``no_event_log``                  (warning) no event log: only PCR values were checked
================================  ============================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from hostseal.attest.policy import (
    APPLICATION_PCR,
    CMDLINE_PCRS,
    SECURE_BOOT_PCR,
    ReferencePolicy,
    loaded_code,
)
from hostseal.measure import (
    Event,
    EventLog,
    EventLogError,
    EventType,
    binding,
    decode_variable,
    forged_events,
    forged_message,
    kernel_cmdlines,
    secure_boot_event,
    secure_boot_state,
)
from hostseal.measure.decode import cmdline_of

__all__ = ["PCR_MEANINGS", "Finding", "Verdict", "VerdictStatus", "evaluate"]

VerdictStatus = Literal["Passed", "Failed", "Warning"]
Severity = Literal["failure", "warning"]

#: What a PCR measures, in the words of the message "PCR n does not match the policy (...)".
PCR_MEANINGS = {
    0: "firmware changed",
    1: "firmware configuration changed",
    2: "option ROMs changed",
    3: "option ROM configuration changed",
    4: "boot manager or boot applications changed",
    5: "GPT or boot configuration changed",
    6: "platform events changed",
    7: "Secure Boot policy changed",
    8: "GRUB command line changed",
    9: "GRUB files changed",
    11: "unified kernel image changed",
    12: "systemd-stub command line or configuration changed",
    13: "system extensions changed",
    14: "MOK changed",
}
_KERNEL_PREFIXES = ("vmlinuz", "vmlinux", "bzimage", "linux", "kernel")


@dataclass(frozen=True)
class Finding:
    """One thing the evaluation found: a stable ``id``, how bad, the operator's message, the
    PCR concerned (if one) and JSON-ready ``details`` (hex digests, paths, expected values)."""

    id: str
    severity: Severity
    message: str
    pcr: int | None = None
    details: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "pcr": self.pcr,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Verdict:
    """The result: ``status`` and ``messages`` for the dashboard, ``findings`` for programs.

    Failed if any finding is a failure, else Warning if any is a warning, else Passed (with no
    messages).
    """

    status: VerdictStatus
    messages: list[str]
    findings: list[Finding]
    policy: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "Passed"

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "policy": self.policy,
            "messages": list(self.messages),
            "findings": [f.to_dict() for f in self.findings],
        }


def _fail(id_: str, message: str, pcr: int | None = None, **details: object) -> Finding:
    return Finding(id_, "failure", message, pcr, details)


def _short(digest: bytes) -> str:
    return digest.hex()[:16] + "…"


def _kind(path: str) -> str:
    base = path.replace("/", "\\").rsplit("\\", 1)[-1].lower()
    return "Kernel image" if base.startswith(_KERNEL_PREFIXES) else "Boot loader"


def evaluate(
    policy: ReferencePolicy,
    pcrs: Mapping[str, Mapping[int, bytes]],
    eventlog: EventLog | None,
) -> Verdict:
    """Judge a host's verified PCR values (bank -> PCR -> value) and event log by ``policy``."""
    bank = policy.quote_bank
    values = pcrs.get(bank, {})
    findings: list[Finding] = []
    missing = [p for p in policy.quote_pcrs if p not in values]
    if missing:
        names = ", ".join(str(p) for p in missing)
        noun = "PCR" if len(missing) == 1 else "PCRs"
        findings.append(
            _fail(
                "pcr_not_quoted",
                f"The attestation does not include {bank} {noun} {names} required by the policy",
                missing=missing,
                bank=bank,
            )
        )
    # What the event log explains comes first ("Host secure boot was disabled"), then the
    # PCRs that differ from the policy's values.
    if eventlog is None:
        findings.extend(_without_log(policy, values))
    else:
        verified = {p for p in values if p in policy.quote_pcrs}
        log = dataclasses.replace(
            eventlog, events=[e for e in eventlog.events if not e.extended or e.pcr in verified]
        )
        findings.extend(_log_checks(policy, log, verified))
    for pcr, expected in sorted(policy.pcrs.get(bank, {}).items()):
        actual = values.get(pcr)
        if actual is None or bytes(actual) == expected:
            continue
        meaning = PCR_MEANINGS.get(pcr, "changed")
        findings.append(
            _fail(
                "pcr_mismatch",
                f"PCR {pcr} does not match the policy ({meaning})",
                pcr,
                bank=bank,
                expected=expected.hex(),
                actual=bytes(actual).hex(),
            )
        )
    return _verdict(policy, findings)


def _verdict(policy: ReferencePolicy, findings: list[Finding]) -> Verdict:
    status: VerdictStatus = "Passed"
    if any(f.severity == "failure" for f in findings):
        status = "Failed"
    elif findings:
        status = "Warning"
    return Verdict(status, [f.message for f in findings], findings, policy.name)


def _without_log(policy: ReferencePolicy, values: Mapping[int, bytes]) -> list[Finding]:
    findings = [
        Finding(
            "no_event_log",
            "warning",
            "No event log was presented: only PCR values were checked",
        )
    ]
    reason = "no event log was presented"
    if policy.require_secure_boot and SECURE_BOOT_PCR in values:
        findings.append(
            _fail("secure_boot_unknown", f"Secure Boot state could not be checked: {reason}", 7)
        )
    if policy.boot_applications and APPLICATION_PCR in values:
        findings.append(
            _fail(
                "boot_applications_unknown", f"Boot applications could not be checked: {reason}", 4
            )
        )
    if policy.has_cmdline_rule and any(p in values for p in CMDLINE_PCRS):
        findings.append(
            _fail("kernel_cmdline_unknown", f"Kernel command line could not be checked: {reason}")
        )
    return findings


_MAX_FORGED_FINDINGS = 10
_VARIABLE_TYPES = (
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
    EventType.EV_EFI_VARIABLE_BOOT,
    EventType.EV_EFI_VARIABLE_BOOT2,
    EventType.EV_EFI_VARIABLE_AUTHORITY,
)


def _what(event: Event) -> str:
    """What a forged event claimed to record, for the message."""
    if cmdline_of(event) is not None:
        return "kernel command line"
    if event.event_type in _VARIABLE_TYPES:
        try:
            return f"{decode_variable(event.data).name} variable"
        except ValueError:
            return "EFI variable"
    return ""


def _forged(log: EventLog) -> list[Finding]:
    """Every event whose data its digests must cover and do not: the log was altered after
    the boot. Hashes each such event's data once (cached on the event)."""
    forged = forged_events(log.events)
    findings = [
        _fail(
            "event_data_forged",
            forged_message(event, _what(event)),
            event.pcr,
            event=event.index,
            event_type=event.type_name,
            banks=list(binding(event).banks),
        )
        for event in forged[:_MAX_FORGED_FINDINGS]
    ]
    if len(forged) > _MAX_FORGED_FINDINGS:
        findings.append(
            _fail(
                "event_data_forged",
                f"{len(forged) - _MAX_FORGED_FINDINGS} more events' data does not match its "
                "measurement",
                events=[e.index for e in forged[_MAX_FORGED_FINDINGS:]],
            )
        )
    return findings


def _log_checks(policy: ReferencePolicy, log: EventLog, verified: set[int]) -> list[Finding]:
    findings: list[Finding] = _forged(log)
    if policy.require_secure_boot and SECURE_BOOT_PCR in verified:
        findings.extend(_secure_boot(log))
    if policy.boot_applications and APPLICATION_PCR in verified:
        findings.extend(_applications(policy, log))
    if policy.has_cmdline_rule and any(p in verified for p in CMDLINE_PCRS):
        findings.extend(_cmdline(policy, log))
    return findings


def _secure_boot(log: EventLog) -> list[Finding]:
    try:
        found = secure_boot_event(log)
    except EventLogError as err:
        return [
            _fail(
                "secure_boot_unknown",
                f"Secure Boot state could not be read from the event log: {err.message}",
                7,
            )
        ]
    if found is None:
        return [
            _fail(
                "secure_boot_unknown",
                "Secure Boot state is not in the event log (no SecureBoot variable in PCR 7)",
                7,
            )
        ]
    event, _variable = found
    bound = binding(event)
    if bound.forged:
        return []  # reported as event_data_forged
    if not bound.fully_verified:
        return [
            _fail(
                "secure_boot_unknown",
                "Secure Boot state could not be verified from the event log: the measurement "
                f"of PCR 7 event {event.index} does not cover the SecureBoot variable's name "
                "and value",
                7,
                event=event.index,
            )
        ]
    try:
        state = secure_boot_state(log)
    except EventLogError as err:
        return [
            _fail(
                "secure_boot_unknown",
                f"Secure Boot state could not be read from the event log: {err.message}",
                7,
            )
        ]
    if not state:
        return [_fail("secure_boot_disabled", "Host secure boot was disabled", 7)]
    return []


def _applications(policy: ReferencePolicy, log: EventLog) -> list[Finding]:
    allowed = policy.allowed_digests
    findings: list[Finding] = []
    for event, path in loaded_code(log):
        digest = event.digests.get("sha256")
        if digest is None:
            return [
                _fail(
                    "boot_applications_unknown",
                    "Boot applications could not be checked: the event log has no SHA-256 digests",
                    4,
                )
            ]
        if digest in allowed:
            continue
        if path is not None:
            # The path comes from the event data, which no digest covers: say so.
            text = f"{_kind(path)} digest not allowed by policy: {path} (path unverified)"
        else:
            text = (
                f"Boot component digest not allowed by policy: PCR 4 event {event.index} "
                f"({event.type_name})"
            )
        findings.append(
            _fail(
                "boot_application_not_allowed",
                f"{text} sha256 {_short(digest)}",
                4,
                path=path,
                sha256=digest.hex(),
                event=event.index,
            )
        )
    return findings


def _cmdline(policy: ReferencePolicy, log: EventLog) -> list[Finding]:
    found = kernel_cmdlines(log)
    if any(c.binding.forged for c in found):
        return []  # reported as event_data_forged: nothing in this log can be relied on
    if not found:
        return [
            _fail(
                "kernel_cmdline_unknown",
                "Kernel command line is not in the event log (PCR 8 or 12)",
            )
        ]
    last = found[-1]
    if not last.verified:
        return [
            _fail(
                "kernel_cmdline_unknown",
                "Kernel command line could not be verified: the digest of PCR "
                f"{last.event.pcr} event {last.event.index} ({last.event.type_name}) is not over "
                "its text in a form hostseal knows",
                last.event.pcr,
                event=last.event.index,
            )
        ]
    cmdline = last.text
    findings: list[Finding] = []
    if policy.kernel_cmdlines and cmdline not in policy.kernel_cmdlines:
        findings.append(
            _fail(
                "kernel_cmdline_not_allowed",
                f"Kernel command line not allowed by policy: {cmdline}",
                cmdline=cmdline,
            )
        )
    words = set(cmdline.split())
    lacking = [s for s in policy.kernel_cmdline_required if s not in words]
    if lacking:
        plural = "setting" if len(lacking) == 1 else "settings"
        findings.append(
            _fail(
                "kernel_cmdline_missing_setting",
                f"Kernel command line lacks required {plural} {', '.join(lacking)}: {cmdline}",
                cmdline=cmdline,
                missing=lacking,
            )
        )
    return findings
