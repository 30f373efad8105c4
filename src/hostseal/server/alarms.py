"""Alarms: raised by the service, acknowledged and reset by operators, cleared by the service.

States: ``raised`` -> ``acknowledged`` (an operator saw it) -> ``cleared``. A cleared alarm is
history; the next time its condition arises a new alarm is raised. Every change is an
:class:`~hostseal.server.storage.models.AlarmEvent` with who and a comment.

Kinds (as vSphere names them):

* ``host-tpm-attestation`` -- raised when an attestation fails, cleared by the next one that
  passes;
* ``tpm-recovery-key-backup`` -- raised for a TPM-mode host until the service holds every
  recovery key the host reports (checked by KCV), raised again after a rotation;
* ``host-not-reporting`` -- raised by the ``stale-hosts`` job for a host with no attestation for
  the stale interval (:mod:`hostseal.server.reporting`), cleared when it reports again.

A reset by hand is refused while the alarm's condition still holds
(:mod:`hostseal.server.alarmreset`, which knows each kind's condition).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostseal.server.errors import Conflict, NotFound
from hostseal.server.storage.models import Alarm, AlarmEvent, Host
from hostseal.server.tokens import SYSTEM, Principal

ATTESTATION = "host-tpm-attestation"
RECOVERY_KEY_BACKUP = "tpm-recovery-key-backup"
NOT_REPORTING = "host-not-reporting"
TITLES = {
    ATTESTATION: "Host TPM attestation alarm",
    RECOVERY_KEY_BACKUP: "TPM encryption recovery key backup alarm",
    NOT_REPORTING: "Host not reporting alarm",
}
RAISED, ACKNOWLEDGED, CLEARED = "raised", "acknowledged", "cleared"


def active(session: Session, host: Host, kind: str) -> Alarm | None:
    return session.scalar(
        select(Alarm).where(Alarm.host_id == host.id, Alarm.kind == kind, Alarm.state != CLEARED)
    )


def _event(alarm: Alarm, event: str, who: Principal, comment: str, now: datetime) -> None:
    alarm.events.append(AlarmEvent(at=now, event=event, who=who.name, comment=comment))
    alarm.updated_at = now


def ensure_raised(session: Session, host: Host, kind: str, message: str, now: datetime) -> Alarm:
    """The host's active alarm of ``kind``, raised now if there is none (message updated)."""
    alarm = active(session, host, kind)
    if alarm is not None:
        alarm.message = message
        return alarm
    alarm = Alarm(
        host=host, kind=kind, state=RAISED, message=message, raised_at=now, updated_at=now
    )
    session.add(alarm)
    _event(alarm, RAISED, SYSTEM, message, now)
    return alarm


def ensure_raised_by_id(
    session: Session, host_id: int, kind: str, message: str, now: datetime
) -> Alarm:
    """:func:`ensure_raised` for a host known by its id (no host row loaded)."""
    alarm = session.scalar(
        select(Alarm).where(Alarm.host_id == host_id, Alarm.kind == kind, Alarm.state != CLEARED)
    )
    if alarm is not None:
        alarm.message = message
        return alarm
    alarm = Alarm(
        host_id=host_id, kind=kind, state=RAISED, message=message, raised_at=now, updated_at=now
    )
    session.add(alarm)
    _event(alarm, RAISED, SYSTEM, message, now)
    return alarm


def record_event(
    alarm: Alarm, event: str, comment: str, now: datetime, who: Principal = SYSTEM
) -> None:
    """An event in the alarm's history, by ``who`` (the service's own by default)."""
    _event(alarm, event, who, comment, now)


def ensure_cleared(session: Session, host: Host, kind: str, comment: str, now: datetime) -> None:
    """Clear the host's active alarm of ``kind``, if any: its condition is gone."""
    alarm = active(session, host, kind)
    if alarm is not None:
        alarm.state = CLEARED
        _event(alarm, CLEARED, SYSTEM, comment, now)


def get(session: Session, alarm_id: int) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise NotFound(f"There is no alarm {alarm_id}.", "List the alarms: hostseal alarm list.")
    return alarm


def acknowledge(
    session: Session, alarm_id: int, who: Principal, comment: str, now: datetime
) -> Alarm:
    alarm = get(session, alarm_id)
    if alarm.state == CLEARED:
        raise Conflict(
            f"Alarm {alarm_id} ({TITLES.get(alarm.kind, alarm.kind)}) is already cleared.",
            "Only raised alarms can be acknowledged.",
        )
    alarm.state = ACKNOWLEDGED
    _event(alarm, ACKNOWLEDGED, who, comment, now)
    return alarm


def list_alarms(
    session: Session,
    *,
    host: str | None = None,
    state: str | None = None,
    limit: int = 500,
    removed: bool = False,
) -> list[Alarm]:
    """The alarms of the fleet's hosts, or with ``removed`` those of removed hosts."""
    which = Host.removed_at.is_not(None) if removed else Host.removed_at.is_(None)
    query = select(Alarm).join(Alarm.host).where(which).order_by(Alarm.id.desc()).limit(limit)
    if host is not None:
        query = query.where(Host.name == host)
    if state == "active":
        query = query.where(Alarm.state != CLEARED)
    elif state is not None:
        query = query.where(Alarm.state == state)
    return list(session.scalars(query))


def to_dict(alarm: Alarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "host": alarm.host.name,
        "kind": alarm.kind,
        "title": TITLES.get(alarm.kind, alarm.kind),
        "state": alarm.state,
        "message": alarm.message,
        "raised_at": alarm.raised_at.isoformat(),
        "updated_at": alarm.updated_at.isoformat(),
        "history": [
            {"at": e.at.isoformat(), "event": e.event, "who": e.who, "comment": e.comment}
            for e in alarm.events
        ],
    }
