"""Alarms reset by hand: refused while the alarm's condition still holds.

Each kind's condition is another module's fact (the last verdict, reporting, the escrowed
recovery keys: :mod:`hostseal.server.escrow`), so this sits above them and above
:mod:`hostseal.server.alarms`, which they all use to raise and clear alarms.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostseal.server import alarms, escrow
from hostseal.server.errors import AlarmConditionHolds, Conflict
from hostseal.server.storage.models import Alarm
from hostseal.server.tokens import Principal


def condition(session: Session, alarm: Alarm) -> tuple[str, str] | None:
    """Why the alarm's condition still holds (message, remedy), or None when it is gone."""
    host = alarm.host
    if alarm.kind == alarms.ATTESTATION:
        if host.last_status == "Failed":
            why = "; ".join(str(m) for m in host.last_messages) or "no message"
            return (
                f"the last attestation of host {host.name!r} failed ({why})",
                "Fix the cause; the alarm clears by itself when the host's next attestation "
                "passes.",
            )
        return None
    if alarm.kind == alarms.NOT_REPORTING:
        if host.status == "not-reporting":
            return (
                alarm.message[0].lower() + alarm.message[1:].rstrip("."),
                "Bring the host or its agent back (systemctl start hostseal-agent); the alarm "
                "clears by itself when the host attests again.",
            )
        return None
    if alarm.kind == alarms.RECOVERY_KEY_BACKUP:
        problem = escrow.backup_problem(session, host)
        if problem is not None:
            return (
                problem,
                "Let the host's agent escrow its recovery keys (POST /v1/escrow, done at each "
                "report); the alarm clears by itself once the server holds every recovery key "
                "the host reports.",
            )
    return None


def reset(session: Session, alarm_id: int, who: Principal, comment: str, now: datetime) -> Alarm:
    """Reset to green by hand: refused while the condition holds."""
    alarm = alarms.get(session, alarm_id)
    if alarm.state == alarms.CLEARED:
        raise Conflict(f"Alarm {alarm_id} is already cleared.", "Nothing to reset.")
    holds = condition(session, alarm)
    if holds is not None:
        message, remedy = holds
        title = alarms.TITLES.get(alarm.kind, alarm.kind)
        raise AlarmConditionHolds(
            f"The {title} of host {alarm.host.name!r} cannot be reset by hand while its "
            f"condition holds: {message}.",
            remedy,
        )
    alarm.state = alarms.CLEARED
    alarms.record_event(alarm, "reset", comment, now, who=who)
    return alarm
