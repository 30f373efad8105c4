"""What the dashboard shows about hosts, in the operator's words.

A status is always a word and a symbol as well as a colour (``tone``), so it reads without
colour. TPM vendor and kind come from the EK certificate when the host sent one (hosts without
one, such as software TPMs, show "—"); Secure Boot comes from the last verified event log; the
configuration mode and requirements from the host's last secure-configuration report.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostseal import tcg
from hostseal.attest import EkCertificateMalformed, read_ek_certificate
from hostseal.measure import EventLog, EventLogError, parse_event_log, secure_boot_state
from hostseal.server import alarms, escrow
from hostseal.server.storage.models import Alarm, Host


@dataclass(frozen=True)
class Status:
    word: str
    tone: str  # ok | bad | warn | info
    symbol: str
    rank: int  # for sorting: the most urgent first


STATUSES = {
    "failed": Status("Failed", "bad", "✗", 0),
    "warning": Status("Warning", "warn", "!", 2),
    "not-reporting": Status("Not reporting", "warn", "?", 3),
    "pending-approval": Status("Pending approval", "info", "…", 4),
    "enrolled": Status("Not attested yet", "info", "…", 5),
    "passed": Status("Passed", "ok", "✓", 6),
}
VERDICTS = {
    "Passed": STATUSES["passed"],
    "Failed": STATUSES["failed"],
    "Warning": STATUSES["warning"],
}
ESCROW = {
    "complete": Status("Escrowed", "ok", "✓", 0),
    "missing": Status("Missing", "bad", "✗", 0),
    "not-applicable": Status("Not needed", "info", "-", 0),
    "unknown": Status("Not reported", "info", "?", 0),
}
ALARM_STATES = {
    "raised": Status("Raised", "bad", "✗", 0),
    "acknowledged": Status("Acknowledged", "warn", "!", 1),
    "cleared": Status("Cleared", "ok", "✓", 2),
}
FILTERS = {
    "": "All hosts",
    "problems": "Needing attention",
    **{key: s.word for key, s in STATUSES.items()},
}
SORTS = {"status": "Status", "name": "Host", "last": "Last attested", "message": "Message"}


def status_of(name: str) -> Status:
    return STATUSES.get(name, Status(name, "info", "?", 9))


@functools.lru_cache(maxsize=256)
def _parsed(digest: str, raw: bytes) -> EventLog | str:
    del digest  # the cache key; the bytes are compared too
    try:
        return parse_event_log(raw)
    except EventLogError as err:
        return err.message


def parsed_log(raw: bytes | None) -> EventLog | str | None:
    """The event log, parsed once per distinct log; the error text when it cannot be read."""
    if not raw:
        return None
    return _parsed(hashlib.sha256(raw).hexdigest(), raw)


def secure_boot_word(raw: bytes | None) -> str:
    log = parsed_log(raw)
    if log is None:
        return "—"
    if isinstance(log, str):
        return "Unknown"
    try:
        state = secure_boot_state(log)
    except EventLogError:
        return "Unknown"
    return "—" if state is None else ("On" if state else "Off")


@functools.lru_cache(maxsize=256)
def tpm_from_certificate(certificate: bytes | None) -> tuple[str, str] | None:
    """(vendor ID, kind) from the TPM manufacturer attribute of the EK certificate, read by
    :func:`hostseal.attest.read_ek_certificate` (every vendor's quirks included); None when
    there is no certificate, it cannot be read, or it names no vendor."""
    if not certificate:
        return None
    try:
        ek = read_ek_certificate(certificate)
    except EkCertificateMalformed:
        return None
    if ek.vendor is None:
        return None
    return ek.vendor, tcg.tpm_kind(ek.vendor)


@dataclass(frozen=True)
class HostRow:
    name: str
    status: str
    state: Status
    message: str
    messages: list[str]
    last_attested_at: datetime | None
    policy: str | None
    tpm: str
    secure_boot: str
    mode: str
    requirements: list[str]
    escrow: Status
    escrow_detail: str
    alarms: int
    vtpms: str = "—"
    search: str = field(default="", repr=False)


def requirements_of(config: dict[str, object] | None) -> list[str]:
    if not config:
        return []
    found = []
    if config.get("require_secure_boot"):
        found.append("Secure Boot")
    if config.get("require_exec_installed_only"):
        found.append("Installed executables only")
    return found


def _escrow_detail(state: escrow.EscrowState) -> str:
    if state.state == "complete":
        return f"{state.matched} of {state.reported} recovery keys held"
    if state.state == "missing":
        return f"{state.matched} of {state.reported} held; missing: " + ", ".join(
            state.missing + state.mismatched or ["no recovery key"]
        )
    if state.state == "not-applicable":
        return "configuration not in TPM mode"
    return "the host has not reported its configuration"


def host_row(session: Session, host: Host, active_alarms: int) -> HostRow:
    messages = [str(m) for m in host.last_messages or []]
    tpm = tpm_from_certificate(host.ek_certificate)
    config = host.secure_config
    state = escrow.state_of(session, host)
    mode = str(config.get("mode", "—")).upper() if config else "—"
    message = messages[0] if messages else ""
    if host.status == "pending-approval":
        message = message or "Its EK has no trusted certificate chain: an operator approves it"
    elif host.status == "not-reporting":  # its last verdict's message is no longer current
        since = host.last_attested_at or host.enrolled_at
        message = f"No attestation since {since:%Y-%m-%d %H:%M} UTC: the host stopped reporting"
    return HostRow(
        name=host.name,
        status=host.status,
        state=status_of(host.status),
        message=message,
        messages=messages,
        last_attested_at=host.last_attested_at,
        policy=host.policy_name,
        tpm=f"{tpm[0]} ({tpm[1]})" if tpm else "—",
        secure_boot=secure_boot_word(host.last_eventlog),
        mode=mode,
        requirements=requirements_of(config),
        escrow=ESCROW.get(state.state, ESCROW["unknown"]),
        escrow_detail=_escrow_detail(state),
        alarms=active_alarms,
        search=f"{host.name} {message}".lower(),
    )


def host_rows(session: Session) -> list[HostRow]:
    counts = dict(
        session.execute(
            select(Alarm.host_id, func.count())
            .where(Alarm.state != alarms.CLEARED)
            .group_by(Alarm.host_id)
        ).all()
    )
    hosts = session.scalars(select(Host).where(Host.removed_at.is_(None)).order_by(Host.name))
    return [host_row(session, h, int(counts.get(h.id, 0))) for h in hosts]


def filter_and_sort(
    rows: list[HostRow], *, status: str, text: str, sort: str, descending: bool
) -> list[HostRow]:
    if status == "problems":
        rows = [r for r in rows if r.status != "passed"]
    elif status:
        rows = [r for r in rows if r.status == status]
    needle = text.strip().lower()
    if needle:
        rows = [r for r in rows if needle in r.search]
    keys = {
        "name": lambda r: (r.name,),
        "status": lambda r: (r.state.rank, r.name),
        "last": lambda r: (r.last_attested_at.timestamp() if r.last_attested_at else 0.0, r.name),
        "message": lambda r: (r.message.lower(), r.name),
    }
    key = keys.get(sort, keys["status"])
    return sorted(rows, key=key, reverse=descending)


def summary(rows: list[HostRow]) -> list[tuple[Status, int]]:
    """How many hosts per status, the urgent ones first (statuses with no host left out)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return [(STATUSES[k], counts[k]) for k in STATUSES if counts.get(k)]
