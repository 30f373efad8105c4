"""The live checks of ``hostseal doctor``: one pass / warn / fail (or skip) line each, with the
knowledge base's finding and remedy for anything that does not pass.

==============  ============================================================================
check           passes when
==============  ============================================================================
tpm             a TPM 2.0 answers at the configured TCTI
sha256-bank     its SHA-256 PCR bank is active
secure-boot     UEFI Secure Boot is on (efivars on a host, the event log for a lab host)
drtm            no dynamic launch (Intel TXT / AMD SKINIT) happened (warn if one did)
lockout         the TPM is not in dictionary-attack lockout
eventlog        this boot's event log exists and replays to the TPM's SHA-256 PCRs
config          a sealed configuration exists, is readable, and is in mode TPM
requirements    its requirements hold on this boot, and Secure Boot is required
unlock          the configuration would unlock on this boot (:mod:`~hostseal.doctor.preflight`)
recovery-keys   it has at least one recovery key
escrow          every recovery key is escrowed (the agent's ``escrow.json``)
agent           the agent is enrolled (its last verdict is not recorded on the host)
==============  ============================================================================

:func:`evaluate` is pure (observations in, results out); :func:`run` observes, then evaluates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hostseal.doctor.knowledge import Finding, KnowledgeBase
from hostseal.doctor.observe import HostState, audit_listings, observe
from hostseal.doctor.preflight import NOT_APPLICABLE
from hostseal.errors import HostsealError
from hostseal.secureconfig.info import Mode
from hostseal.secureconfig.recoverykey import format_recovery_id
from hostseal.secureconfig.requirements import unmet
from hostseal.secureconfig.store import NoBundle

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"

LABELS: dict[str, str] = {
    "tpm": "TPM present, version 2.0",
    "sha256-bank": "SHA-256 PCR bank active",
    "secure-boot": "UEFI Secure Boot",
    "drtm": "Dynamic launch (Intel TXT / AMD SKINIT)",
    "lockout": "Dictionary-attack lockout",
    "eventlog": "Event log matches the TPM",
    "config": "Sealed configuration",
    "requirements": "Requirements on this boot",
    "unlock": "Unlocks on this boot (pre-flight)",
    "recovery-keys": "Recovery keys",
    "escrow": "Recovery keys escrowed",
    "agent": "Attestation agent",
}

REASONS: dict[str, dict[str, tuple[str | None, ...]]] = {
    "tpm": {FAIL: ("unavailable", "busy", "tpm-1.2")},
    "sha256-bank": {FAIL: (None,)},
    "secure-boot": {FAIL: (None,), WARN: ("unknown",)},
    "drtm": {WARN: (None,)},
    "lockout": {FAIL: (None,)},
    "eventlog": {FAIL: ("mismatch", "unreadable", "absent")},
    "config": {WARN: ("no-bundle", "mode-none", "fallback"), FAIL: ("corrupt",)},
    "requirements": {FAIL: ("secure-boot", "exec-installed-only"), WARN: ("not-enforced",)},
    "unlock": {
        FAIL: (
            "tpm-unavailable",
            "tpm-replaced",
            "tpm-cleared",
            "secure-boot",
            "pcr-policy",
            "requirements",
            "eventlog",
        ),
        WARN: ("lockout", "tpm-error"),
    },
    "recovery-keys": {FAIL: ("none",)},
    "escrow": {FAIL: ("not-escrowed",), WARN: ("listed-only",)},
    "agent": {WARN: ("not-enrolled",)},
}
"""Every non-passing state (and reason) a check can report; each has a knowledge-base finding
(the tests check it)."""


@dataclass
class CheckResult:
    """One line of the report: what was checked, the state, what was seen, what to do."""

    check: str
    state: str
    detail: str
    reason: str | None = None
    finding: Finding | None = None
    remedy: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.check]

    def to_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "label": self.label,
            "state": self.state,
            "detail": self.detail,
            "reason": self.reason,
            "finding": self.finding.to_dict() if self.finding else None,
            "remedy": self.remedy,
            **({"data": self.data} if self.data else {}),
        }


_Result = tuple[str, str, str | None]  # state, detail, reason


def _tpm(s: HostState) -> _Result:
    err = s.tpm_error
    if err is not None:
        kind = type(err).__name__
        reason = {"TpmNotSupported": "tpm-1.2", "TpmBusy": "busy"}.get(kind, "unavailable")
        return FAIL, err.message, reason
    assert s.host is not None
    t = s.host.tpm
    return (
        PASS,
        f"TPM {t.family} by {t.vendor_id} ({t.vendor_name}), firmware {t.firmware_version}, "
        f"{t.kind}, at {s.tcti}",
        None,
    )


def _sha256(s: HostState) -> _Result:
    if s.host is None:
        return SKIP, "no TPM to ask", None
    banks = ", ".join(s.host.tpm.active_banks) or "none"
    if s.host.tpm.sha256_active:
        return PASS, f"active (active banks: {banks})", None
    return FAIL, f"not active (active banks: {banks})", None


def _secure_boot(s: HostState) -> _Result:
    if s.host is None:
        return SKIP, "no TPM to ask (Secure Boot is read with the TPM's facts)", None
    sb = s.host.secure_boot
    if sb.enabled is True:
        return PASS, f"enabled (from {sb.source})", None
    if sb.enabled is False:
        return FAIL, f"disabled (from {sb.source})", None
    return WARN, f"unknown: {sb.detail}", "unknown"


def _drtm(s: HostState) -> _Result:
    if s.host is None or s.host.drtm_launched is None:
        return SKIP, "PCR 17 cannot be read (no TPM, or no SHA-256 bank)", None
    if s.host.drtm_launched:
        return WARN, "a dynamic launch extended PCR 17 on this boot", None
    return PASS, "no dynamic launch on this boot (PCR 17 at its reset value)", None


def _lockout(s: HostState) -> _Result:
    if s.host is None:
        return SKIP, "no TPM to ask", None
    if s.host.in_lockout:
        return FAIL, "the TPM is in lockout and refuses authorisations", None
    return PASS, "not in lockout", None


def _eventlog(s: HostState) -> _Result:
    if s.boot_absent:
        assert s.boot_error is not None
        return FAIL, s.boot_error, "absent"
    if s.boot_error is not None:
        return FAIL, s.boot_error, "unreadable"
    if s.log_mismatches is None:
        return SKIP, "not compared (no TPM with an active SHA-256 bank)", None
    if s.log_mismatches:
        pcrs = ", ".join(str(m.pcr) for m in s.log_mismatches)
        return FAIL, f"{s.eventlog} does not replay to the TPM's PCRs {pcrs}", "mismatch"
    assert s.boot is not None
    return (
        PASS,
        f"{s.eventlog} replays to the TPM's sha256 PCRs ({len(s.boot.events)} events)",
        None,
    )


def _config(s: HostState) -> _Result:
    if s.bundle is None:
        err = s.bundle_error
        if isinstance(err, NoBundle) or err is None:
            return WARN, f"no sealed configuration in {s.bootbank}", "no-bundle"
        return FAIL, err.message, "corrupt"
    info = s.bundle.info
    if s.bundle.notices:
        return WARN, " ".join(s.bundle.notices), "fallback"
    where = f"generation {info.generation}, saved {info.saved_at.isoformat()}"
    if info.mode is Mode.NONE:
        return WARN, f"mode NONE (obfuscation, not encryption), {where}", "mode-none"
    slot = info.tpm_slot
    assert slot is not None
    pcrs = f"{slot.pcr_bank} PCRs {', '.join(map(str, slot.pcrs))}" if slot.pcrs else "no PCR"
    return PASS, f"mode TPM, sealed to {pcrs}, {where}", None


def _requirements(s: HostState) -> _Result:
    if s.bundle is None:
        return SKIP, "no sealed configuration", None
    req = s.bundle.info.requirements
    said = (
        f"Require Secure Boot: {str(req.require_secure_boot).lower()}, Require Exec Installed "
        f"Only: {str(req.require_exec_installed_only).lower()}"
    )
    if s.bundle.info.mode is Mode.NONE:
        return PASS, f"{said} (mode NONE enforces nothing)", None
    if s.boot is None:
        return SKIP, f"{said}; this boot's event log is unavailable", None
    problems = unmet(req, s.boot)
    if problems:
        reason = problems[0].requirement
        return FAIL, f"{said}; " + "; ".join(p.reason for p in problems), reason
    if not req.require_secure_boot:
        return WARN, f"{said}: turning Secure Boot off would go unnoticed", "not-enforced"
    return PASS, f"{said}; met on this boot", None


def _unlock(s: HostState) -> _Result:
    p = s.preflight
    if p.verdict == NOT_APPLICABLE:
        return SKIP, "no sealed configuration", None
    text = f"{p.verdict}: " + "; ".join(c.rstrip(".") for c in p.causes)
    if p.will_unlock is True:
        return PASS, text, None
    if p.will_unlock is False:
        return FAIL, text, p.reason
    return WARN, text, p.reason


def _recovery_keys(s: HostState) -> _Result:
    if s.bundle is None:
        return SKIP, "no sealed configuration", None
    ids = [format_recovery_id(r.recovery_id) for r in s.bundle.info.recovery_slots]
    if not ids:
        return FAIL, "the configuration has no recovery key", "none"
    return PASS, f"{len(ids)} recovery key{'' if len(ids) == 1 else 's'}: {', '.join(ids)}", None


def _escrow(s: HostState) -> _Result:
    if s.bundle is None or not s.bundle.info.recovery_slots:
        return SKIP, "no recovery key to escrow", None
    ids = [format_recovery_id(r.recovery_id) for r in s.bundle.info.recovery_slots]
    missing = [i for i in ids if i not in s.agent.escrowed]
    if not missing:
        return PASS, f"escrowed with the attestation service (agent record in {s.agent.path})", None
    shown = audit_listings(s.audit)
    listed = [i for i in missing if i in shown]
    not_escrowed = f"not escrowed: {', '.join(missing)}"
    if len(listed) == len(missing):
        when = ", ".join(f"{i} on {shown[i]}" for i in listed)
        return (
            WARN,
            f"{not_escrowed}; shown by 'hostseal recovery list' ({when}), but nothing proves it "
            "was saved off the host",
            "listed-only",
        )
    return FAIL, f"{not_escrowed}, and never shown by 'hostseal recovery list'", "not-escrowed"


def _agent(s: HostState) -> _Result:
    a = s.agent
    if a.problem is not None:
        return WARN, a.problem, "not-enrolled"
    if not a.enrolled:
        where = "does not exist" if not a.exists else "holds no attestation key or token"
        return WARN, f"not enrolled: the agent's state directory {a.path} {where}", "not-enrolled"
    return (
        PASS,
        f"enrolled (attestation key and token in {a.path}). The agent does not record its last "
        "verdict on the host: see the attestation service (the host's attestation status), or "
        "run 'hostseal agent run --once'",
        None,
    )


_CHECKS: dict[str, Callable[[HostState], _Result]] = {
    "tpm": _tpm,
    "sha256-bank": _sha256,
    "secure-boot": _secure_boot,
    "drtm": _drtm,
    "lockout": _lockout,
    "eventlog": _eventlog,
    "config": _config,
    "requirements": _requirements,
    "unlock": _unlock,
    "recovery-keys": _recovery_keys,
    "escrow": _escrow,
    "agent": _agent,
}


def evaluate(state: HostState, kb: KnowledgeBase) -> list[CheckResult]:
    """Every check, in order, with its finding and remedy where it does not pass."""
    results = []
    for check, judge in _CHECKS.items():
        status, detail, reason = judge(state)
        result = CheckResult(check, status, detail, reason)
        if status in (WARN, FAIL):
            result.finding = kb.for_check(check, status, reason)
            if result.finding is None:
                cause = _error_of(state, check)
                if cause is not None:
                    result.finding = kb.for_error(cause)
                    result.remedy = [cause.remedy] if cause.remedy else []
            if result.finding is not None:
                result.remedy = list(result.finding.remedy)
        if check == "unlock":
            result.data = state.preflight.to_dict()
        results.append(result)
    return results


def _error_of(state: HostState, check: str) -> HostsealError | None:
    if check == "unlock":
        return state.preflight.error
    if check == "tpm":
        return state.tpm_error
    return None


def explanations(
    results: list[CheckResult], kb: KnowledgeBase
) -> list[tuple[Finding, list[CheckResult]]]:
    """The findings behind the checks that did not pass, each once, with its checks; a finding
    another one present explains (supersedes) is folded into that one."""
    present = {r.finding.id: r.finding for r in results if r.finding is not None}
    folded = {
        other: finding_id
        for finding_id in present
        for other in kb.superseded_by(finding_id)
        if other in present and other != finding_id
    }
    grouped: dict[str, list[CheckResult]] = {}
    for r in results:
        if r.finding is None:
            continue
        target = r.finding.id
        while target in folded:
            target = folded[target]
        grouped.setdefault(target, []).append(r)
    return [(present[i], checks) for i, checks in grouped.items()]


def failed(results: list[CheckResult]) -> bool:
    return any(r.state == FAIL for r in results)


def run(
    kb: KnowledgeBase,
    tcti: str,
    eventlog: Path,
    bootbank: Path,
    agent_dir: Path,
    *,
    probe: bool = True,
) -> tuple[HostState, list[CheckResult]]:
    """Observe the host, then evaluate every check."""
    state = observe(tcti, eventlog, bootbank, agent_dir, probe=probe)
    return state, evaluate(state, kb)
