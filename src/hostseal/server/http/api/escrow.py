"""Admin endpoints: escrowed recovery keys (every read audited with its reason), audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from hostseal.server import audit, escrow
from hostseal.server.http.api.deps import Admin, Ctx, NamePath, NameQuery, ReasonQuery

router = APIRouter(tags=["escrow"])


@router.get("/escrow/{host}")
def read_host_keys(
    host: NamePath, ctx: Ctx, who: Admin, reason: ReasonQuery = ""
) -> dict[str, Any]:
    """The host's escrowed recovery keys in clear; the read is audited with ``reason``."""
    stated = audit.require_reason(reason, "read escrowed recovery keys")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        keys = escrow.read_keys(session, ctx.server_key, host)
        audit.record(
            session,
            who,
            "escrow.read",
            now=now,
            host=host,
            reason=stated,
            details={"recovery_ids": [k["recovery_id"] for k in keys]},
        )
    return {"host": host, "keys": keys}


@router.get("/escrow")
def export_keys(ctx: Ctx, who: Admin, reason: ReasonQuery = "") -> dict[str, Any]:
    """Every escrowed key as one document; the export is audited with ``reason``."""
    stated = audit.require_reason(reason, "export escrowed recovery keys")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        hosts = escrow.export_all(session, ctx.server_key)
        audit.record(
            session,
            who,
            "escrow.export",
            now=now,
            reason=stated,
            details={
                "hosts": len(hosts),
                "keys": sum(len(h["keys"]) for h in hosts),
                # which keys left the server, not only how many
                "recovery_ids": {h["host"]: [k["recovery_id"] for k in h["keys"]] for h in hosts},
            },
        )
    return {
        "format": "hostseal-escrow-export v1",
        "exported_at": now.isoformat(),
        "exported_by": who.name,
        "reason": stated,
        "hosts": hosts,
    }


@router.get("/audit")
def audit_log(
    ctx: Ctx,
    _: Admin,
    host: NameQuery = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """The audit log, newest first."""
    with ctx.sessions() as session:
        events = audit.events(session, host=host, action=action, limit=max(1, min(limit, 5000)))
        return [audit.to_dict(e) for e in events]
