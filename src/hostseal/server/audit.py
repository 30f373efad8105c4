"""The audit log: every sensitive read (recovery keys) and every change, with who and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostseal.server.errors import ReasonRequired
from hostseal.server.storage.models import AuditEvent
from hostseal.server.tokens import Principal


def require_reason(reason: str | None, doing: str) -> str:
    """The stated reason, stripped; 422 when there is none."""
    text = (reason or "").strip()
    if not text:
        raise ReasonRequired(
            f"A reason is required to {doing}; it is kept in the audit log.",
            "State why, for example: --reason 'system board replaced, ticket 4711'.",
        )
    if len(text) > 1000:
        raise ReasonRequired("The reason is longer than 1000 characters.", "Give a shorter reason.")
    return text


def record(
    session: Session,
    who: Principal,
    action: str,
    *,
    now: datetime,
    host: str | None = None,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        at=now,
        who=who.name,
        role=who.role,
        action=action,
        host=host,
        reason=reason,
        details=details or {},
    )
    session.add(event)
    return event


def events(
    session: Session, *, host: str | None = None, action: str | None = None, limit: int = 500
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if host is not None:
        query = query.where(AuditEvent.host == host)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))


def to_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "who": event.who,
        "role": event.role,
        "action": event.action,
        "host": event.host,
        "reason": event.reason,
        "details": event.details,
    }
