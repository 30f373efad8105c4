"""Hosts that stop reporting: shown as such at once, alarmed by the scheduler, refused keys.

A host that has attested (or was approved) and then sends no evidence for ``stale_after``
(``report_interval`` x ``stale_intervals``, 15 minutes by default: docs/server.md) is **not
reporting**. Its last verdict is kept as history but is no longer current:

* the API (and so ``hostseal host list/show`` and the agent's ``GET /v1/attest/status``, which
  vTPM key release asks) shows it ``not-reporting`` as soon as it is late, computed from its last
  attestation on the server's clock, whether or not the job below has run yet;
* the ``stale-hosts`` job (:mod:`hostseal.server.scheduler`, claimed once across instances) sets
  the status, audits ``host.not-reporting`` and raises the host's ``host-not-reporting`` alarm
  (as vSphere shows a disconnected host); the next evidence the host sends clears it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from hostseal.attest.verdict import VerdictStatus
from hostseal.server import alarms, audit
from hostseal.server.enrol import ENROLLED
from hostseal.server.settings import ServerSettings
from hostseal.server.storage.models import Alarm, Host
from hostseal.server.tokens import SYSTEM

NOT_REPORTING = "not-reporting"
# a host's status after evidence: its verdict's status, in the spelling of host statuses
HOST_STATUS: dict[VerdictStatus, str] = {
    "Passed": "passed",
    "Failed": "failed",
    "Warning": "warning",
}
REPORTED = tuple(HOST_STATUS.values())  # what evidence sets a host's status to
ATTESTED = (*REPORTED, ENROLLED)
BATCH = 500


def host_status(verdict: VerdictStatus) -> str:
    """The host's status once a verdict of this status is stored ("Passed" -> "passed")."""
    return HOST_STATUS[verdict]


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def late_message(last: datetime, settings: ServerSettings) -> str:
    """What a late host's status says instead of its last verdict's message."""
    return (
        f"No attestation since {last.isoformat()} (expected every "
        f"{_span(settings.report_interval)}; a host is not reporting after "
        f"{_span(settings.stale_after)}): its last verdict is no longer current."
    )


def alarm_message(name: str, last: datetime, settings: ServerSettings) -> str:
    return (
        f"Host {name!r} has not reported an attestation since {last.isoformat()} (expected "
        f"every {_span(settings.report_interval)}): it may be down, disconnected, or its agent "
        "stopped."
    )


def shown(data: dict[str, Any], now: datetime, settings: ServerSettings) -> dict[str, Any]:
    """A host as :func:`hostseal.server.hostviews.host_to_dict` shows it, with ``status``
    ``not-reporting`` (and the message saying since when) when it is late, even before the
    ``stale-hosts`` job has marked it."""
    status = data.get("status")
    seen = data.get("last_attested_at") or data.get("enrolled_at")
    if (status not in ATTESTED and status != NOT_REPORTING) or not seen:
        return data
    last = datetime.fromisoformat(seen)
    if status == NOT_REPORTING or last < now - settings.stale_after:
        message = late_message(last, settings)
        data = {**data, "status": NOT_REPORTING, "message": message, "messages": [message]}
    return data


def mark_stale(session: Session, now: datetime, settings: ServerSettings) -> list[str]:
    """Hosts with no attestation for ``stale_after`` become ``not-reporting``, each audited and
    given its alarm; their names. Claims the hosts with ``FOR UPDATE SKIP LOCKED`` (a host whose
    evidence is being stored is left for the next round) and reads only the columns it needs.
    Also clears the alarm of any host that reported again meanwhile."""
    limit = now - settings.stale_after
    last = func.coalesce(Host.last_attested_at, Host.enrolled_at)
    marked: list[str] = []
    while True:
        rows = session.execute(
            select(Host.id, Host.name, Host.last_attested_at, Host.enrolled_at)
            .where(Host.status.in_(ATTESTED), Host.removed_at.is_(None), last < limit)
            .order_by(Host.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            session.execute(
                update(Host)
                .where(Host.id.in_([row.id for row in rows]))
                .values(status=NOT_REPORTING)
                .execution_options(synchronize_session=False)
            )
        for row in rows:
            seen = row.last_attested_at or row.enrolled_at
            audit.record(
                session,
                SYSTEM,
                "host.not-reporting",
                now=now,
                host=row.name,
                details={"last_attested_at": seen.isoformat()},
            )
            message = alarm_message(row.name, seen, settings)
            alarms.ensure_raised_by_id(session, row.id, alarms.NOT_REPORTING, message, now)
            marked.append(row.name)
        if len(rows) < BATCH:
            break
    _clear_reported(session, now)
    return marked


def _clear_reported(session: Session, now: datetime) -> None:
    """Clear the not-reporting alarms of hosts that reported since (normally cleared with their
    evidence; this catches evidence stored while the job was marking the host)."""
    back = session.scalars(
        select(Alarm)
        .join(Host, Host.id == Alarm.host_id)
        .where(
            Alarm.kind == alarms.NOT_REPORTING,
            Alarm.state != alarms.CLEARED,
            Host.status.in_(REPORTED),
        )
        .limit(BATCH)
        .with_for_update(of=Alarm, skip_locked=True)
    )
    for alarm in back:
        alarm.state = alarms.CLEARED
        alarms.record_event(alarm, alarms.CLEARED, "the host reported again", now)
