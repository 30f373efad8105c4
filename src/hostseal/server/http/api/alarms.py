"""User endpoints for alarms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hostseal.server import alarmreset, alarms
from hostseal.server.http.api.deps import Ctx, NameQuery, Operator, RowId, Viewer
from hostseal.server.http.api.schemas import CommentIn

router = APIRouter(tags=["alarms"])


@router.get("/alarms")
def list_alarms(
    ctx: Ctx,
    _: Viewer,
    host: NameQuery = None,
    state: Annotated[str | None, Query(max_length=20)] = None,
    removed: bool = False,
) -> list[dict[str, Any]]:
    """Alarms (newest first) with their history; ``state``: raised, acknowledged, cleared or
    active (not cleared); with ``removed=true`` the alarms of removed hosts instead."""
    with ctx.sessions() as session:
        found = alarms.list_alarms(session, host=host, state=state, removed=removed)
        return [alarms.to_dict(a) for a in found]


@router.post("/alarms/{alarm_id}/ack")
def acknowledge(alarm_id: RowId, body: CommentIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        alarm = alarms.acknowledge(session, alarm_id, who, body.comment, ctx.clock.now())
        session.flush()
        return alarms.to_dict(alarm)


@router.post("/alarms/{alarm_id}/reset", responses={409: {"description": "condition holds"}})
def reset(alarm_id: RowId, body: CommentIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Reset to green by hand; refused (409) while the alarm's condition still holds."""
    with ctx.sessions.begin() as session:
        alarm = alarmreset.reset(session, alarm_id, who, body.comment, ctx.clock.now())
        session.flush()
        return alarms.to_dict(alarm)
