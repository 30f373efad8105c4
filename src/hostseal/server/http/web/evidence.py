"""A host's last evidence against its policy, and its last verdict against the one before.

The service keeps each host's last verified PCR values and event log (``hosts.last_pcrs``,
``hosts.last_eventlog``). Here they are compared with the host's reference policy as it is now,
through the service's verifier (the same evaluation as an attestation), and every finding is
pinned to the PCR and the event it concerns: the SecureBoot variable event when Secure Boot is
off, a boot application outside the allow-list, the command line, the events of a PCR whose
value differs. The event log is decoded with :mod:`hostseal.measure`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostseal.attest import Finding
from hostseal.errors import HostsealError
from hostseal.measure import Event, EventLog, EventType, cmdline_of, decode_variable, describe
from hostseal.server.context import ServerContext
from hostseal.server.http.web.hostrows import parsed_log
from hostseal.server.storage.models import Host, Policy, StoredVerdict


@dataclass(frozen=True)
class Note:
    severity: str  # failure | warning | context
    text: str


@dataclass(frozen=True)
class PcrRow:
    index: int
    expected: str | None
    actual: str | None
    state: str  # matches | differs | not pinned | not quoted
    meaning: str = ""


@dataclass
class EventRow:
    index: int
    pcr: int
    type_name: str
    text: str
    digest: str
    notes: list[Note] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return _severity(self.notes)


ALARMING = ("failure", "warning")


def _severity(notes: Iterable[Note]) -> str:
    order = ("failure", "warning", "context")
    found = [n.severity for n in notes]
    return next((s for s in order if s in found), "")


@dataclass
class HostEvidence:
    bank: str
    policy: str | None
    policy_error: str | None
    pcrs: list[PcrRow]
    events: list[EventRow]
    log_error: str | None
    findings: list[Finding]
    requirements: list[str]
    #: the decoded log is shown a page at a time: ``events`` is page ``page`` of ``pages``
    event_count: int = 0
    page: int = 1
    pages: int = 1
    #: events that differ from the policy: the first ``FLAGGED_SHOWN`` of ``flagged_total``
    flagged_rows: list[EventRow] = field(default_factory=list)
    flagged_total: int = 0

    @property
    def flagged(self) -> list[EventRow]:
        return self.flagged_rows

    @property
    def first_shown(self) -> int:
        return (self.page - 1) * EVENTS_PER_PAGE + 1 if self.events else 0

    @property
    def last_shown(self) -> int:
        return self.first_shown + len(self.events) - 1 if self.events else 0

    @property
    def differing(self) -> int:
        return sum(1 for p in self.pcrs if p.state == "differs")


#: events of the decoded log per page, and events that differ from the policy listed at most
EVENTS_PER_PAGE = 100
FLAGGED_SHOWN = 100

PCR_MEANINGS = {
    0: "firmware",
    1: "firmware configuration",
    2: "option ROMs",
    3: "option ROM configuration",
    4: "boot manager and boot applications",
    5: "GPT and boot configuration",
    6: "platform events",
    7: "Secure Boot policy",
    8: "kernel command line (GRUB)",
    9: "GRUB files",
    11: "unified kernel image",
    12: "systemd-stub command line",
    13: "system extensions",
    14: "MOK",
}


def _policy_document(session: Session, host: Host) -> tuple[str, str] | None:
    if host.policy_name is None:
        return None
    row = session.scalar(select(Policy).where(Policy.name == host.policy_name))
    return (row.name, row.document) if row is not None else None


def _requirements(document: dict[str, Any]) -> list[str]:
    said = []
    bank = document.get("quote_bank", "sha256")
    pinned = sorted(int(i) for i in (document.get("pcrs") or {}).get(bank, {}))
    if pinned:
        said.append("PCR values pinned: " + ", ".join(str(p) for p in pinned))
    if document.get("require_secure_boot"):
        said.append("Secure Boot must be on")
    apps = document.get("boot_applications") or []
    if apps:
        said.append(f"{len(apps)} boot application(s) allowed")
    if document.get("kernel_cmdlines"):
        said.append(f"{len(document['kernel_cmdlines'])} kernel command line(s) allowed")
    if document.get("kernel_cmdline_required"):
        said.append("command line must contain " + ", ".join(document["kernel_cmdline_required"]))
    return said


def _secure_boot_event(log: EventLog) -> int | None:
    for event in log.events:
        if event.pcr != 7 or event.event_type != EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
            continue
        try:
            if decode_variable(event.data).name == "SecureBoot":
                return event.index
        except ValueError:
            continue
    return None


def _cmdline_event(log: EventLog) -> int | None:
    found = None
    for event in log.events:
        if cmdline_of(event) is not None:
            found = event.index
    return found


def _event_of(finding: Finding, log: EventLog) -> int | None:
    event = finding.details.get("event")
    if isinstance(event, int):
        return event
    kind = finding.id
    if kind.startswith("secure_boot"):
        return _secure_boot_event(log)
    if kind.startswith("kernel_cmdline"):
        return _cmdline_event(log)
    return None


def _events(events: Iterable[Event], bank: str, notes: dict[int, list[Note]]) -> list[EventRow]:
    rows = []
    for event in events:
        digest = event.digests.get(bank) or next(iter(event.digests.values()), b"")
        rows.append(
            EventRow(
                event.index,
                event.pcr,
                event.type_name,
                describe(event),
                digest.hex(),
                list(notes.get(event.index, ())),
            )
        )
    return rows


def page_of(text: str | None) -> int:
    """The page of the event log asked for (``?events=N``); 1 when absent or not a number."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 6:
        return 1
    return max(1, int(text))


def version(session: Session, host: Host, page: int) -> str:
    """Names what the evidence region shows (the last log, PCR values and policy, the page): the
    live refresh sends the region again only when this changes."""
    digest = None
    if host.policy_name is not None:
        digest = session.scalar(select(Policy.digest).where(Policy.name == host.policy_name))
    parts = (
        host.last_eventlog_sha256 or "",
        json.dumps(host.last_pcrs or {}, sort_keys=True),
        host.policy_name or "",
        digest or "",
        str(page),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _paginate(
    evidence: HostEvidence, log: EventLog, bank: str, notes: dict[int, list[Note]], page: int
) -> None:
    total = len(log.events)
    evidence.event_count = total
    evidence.pages = max(1, -(-total // EVENTS_PER_PAGE))
    evidence.page = min(page, evidence.pages)
    start = (evidence.page - 1) * EVENTS_PER_PAGE
    evidence.events = _events(log.events[start : start + EVENTS_PER_PAGE], bank, notes)
    differing = [e for e in log.events if _severity(notes.get(e.index, ())) in ALARMING]
    evidence.flagged_total = len(differing)
    evidence.flagged_rows = _events(differing[:FLAGGED_SHOWN], bank, notes)


def _pcr_rows(
    bank: str, expected: dict[int, str], actual: dict[int, str], quoted: list[int]
) -> list[PcrRow]:
    rows = []
    for index in sorted(set(expected) | set(actual) | set(quoted)):
        want, have = expected.get(index), actual.get(index)
        if want is None:
            state = "not pinned" if have is not None else "not quoted"
        elif have is None:
            state = "not quoted"
        else:
            state = "matches" if want.lower() == have.lower() else "differs"
        rows.append(PcrRow(index, want, have, state, PCR_MEANINGS.get(index, "")))
    return rows


def host_evidence(ctx: ServerContext, session: Session, host: Host, page: int = 1) -> HostEvidence:
    """The host's last evidence compared with its policy, for the host page; page ``page`` of
    its decoded event log."""
    pcrs = host.last_pcrs or {}
    policy = _policy_document(session, host)
    document: dict[str, Any] = {}
    if policy is not None:
        try:
            document = json.loads(policy[1])
        except ValueError:
            document = {}
    bank = str(document.get("quote_bank") or next(iter(pcrs), "sha256"))
    actual = {int(i): str(v) for i, v in (pcrs.get(bank) or {}).items()}
    expected = {int(i): str(v) for i, v in ((document.get("pcrs") or {}).get(bank) or {}).items()}
    quoted = [int(p) for p in document.get("quote_pcrs") or []]
    evidence = HostEvidence(
        bank=bank,
        policy=policy[0] if policy else None,
        policy_error=None,
        pcrs=_pcr_rows(bank, expected, actual, quoted),
        events=[],
        log_error=None,
        findings=[],
        requirements=_requirements(document),
    )
    log = parsed_log(host.last_eventlog)
    if isinstance(log, str):
        evidence.log_error = log
        log = None
    notes: dict[int, list[Note]] = {}
    if policy is not None and pcrs:
        try:
            facts = ctx.verifier.check_policy(*policy)
            values = {
                b: {int(i): bytes.fromhex(v) for i, v in vals.items()} for b, vals in pcrs.items()
            }
            verdict = ctx.verifier.evaluate(facts, values, log)
        except (HostsealError, ValueError) as err:
            evidence.policy_error = getattr(err, "message", str(err))
        else:
            evidence.findings = verdict.findings
            notes = _place(evidence.findings, log)
    if log is not None:
        _paginate(evidence, log, bank, notes, page)
    return evidence


def _place(findings: list[Finding], log: EventLog | None) -> dict[int, list[Note]]:
    """The notes of each event (by index): the findings pinned to it, and "which differs" on
    the events of a PCR whose value differs."""
    notes: dict[int, list[Note]] = {}
    if log is None:
        return notes
    known = {e.index for e in log.events}
    for finding in findings:
        index = _event_of(finding, log)
        if index is not None and index in known:
            notes.setdefault(index, []).append(Note(finding.severity, finding.message))
            continue
        pcr = finding.pcr
        if finding.id == "pcr_mismatch" and pcr is not None:
            for event in log.events:
                if event.pcr == pcr:
                    note = Note("context", f"measured into PCR {pcr}, which differs")
                    notes.setdefault(event.index, []).append(note)
    return notes


@dataclass(frozen=True)
class VerdictChange:
    """The last verdict against the one before: status and the messages that came and went."""

    before_status: str
    after_status: str
    before_at: Any
    after_at: Any
    gone: list[str]
    new: list[str]
    kept: list[str]

    @property
    def same(self) -> bool:
        return self.before_status == self.after_status and not self.gone and not self.new


def verdict_change(verdicts: list[StoredVerdict]) -> VerdictChange | None:
    """``verdicts`` newest first; None with fewer than two."""
    if len(verdicts) < 2:
        return None
    after, before = verdicts[0], verdicts[1]
    old = [str(m) for m in before.messages or []]
    new = [str(m) for m in after.messages or []]
    return VerdictChange(
        before.status,
        after.status,
        before.at,
        after.at,
        gone=[m for m in old if m not in new],
        new=[m for m in new if m not in old],
        kept=[m for m in new if m in old],
    )
