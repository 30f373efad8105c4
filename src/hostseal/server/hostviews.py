"""Hosts as the API shows them (the JSON of ``GET /v1/hosts`` and ``GET /v1/hosts/{name}``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostseal.server import alarms, escrow
from hostseal.server.storage.models import Alarm, Host, StoredVerdict, TpmChangeRequest

HISTORY = 100


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def host_to_dict(session: Session, host: Host, *, history: bool = False) -> dict[str, Any]:
    messages = [str(m) for m in host.last_messages or []]
    active = session.scalars(
        select(Alarm).where(Alarm.host_id == host.id, Alarm.state != alarms.CLEARED)
    )
    data: dict[str, Any] = {
        "name": host.name,
        "status": "removed" if host.removed_at is not None else host.status,
        "message": messages[0] if messages else None,
        "messages": messages,
        "last_verdict": host.last_status,
        "last_attested_at": _iso(host.last_attested_at),
        "enrolled_at": _iso(host.enrolled_at),
        "policy": host.policy_name,
        "ek": {
            "fingerprint": host.ek_fingerprint,
            "certificate": host.ek_certificate is not None,
            "trusted_chain": host.ek_trusted,
            "new_fingerprint": host.new_ek_fingerprint,
        },
        "ak": {"name": host.ak_name},
        "reconnect_allowed": host.reconnect_allowed,
        "secure_config": host.secure_config,
        "escrow": escrow.state_of(session, host).to_dict(),
        "alarms": [{"id": a.id, "kind": a.kind, "state": a.state} for a in active],
        "tpm_change_requests": tpm_change_requests(session, host),
    }
    if host.removed_at is not None:
        data["removed"] = {
            "at": _iso(host.removed_at),
            "by": host.removed_by,
            "reason": host.removed_reason,
        }
    if history:
        verdicts = session.scalars(
            select(StoredVerdict)
            .where(StoredVerdict.host_id == host.id)
            .order_by(StoredVerdict.id.desc())
            .limit(HISTORY)
        )
        data["verdicts"] = [
            {
                "at": v.at.isoformat(),
                "status": v.status,
                "messages": v.messages,
                "policy": v.policy_name,
                "error": v.error,
            }
            for v in verdicts
        ]
    return data


def tpm_change_requests(session: Session, host: Host) -> list[dict[str, Any]]:
    """Other TPMs that enrolled under the host's name (newest first): the old and the new EK,
    whether the new one's certificate chains to the trust store, who asked from where."""
    rows = session.scalars(
        select(TpmChangeRequest)
        .where(TpmChangeRequest.host_id == host.id)
        .order_by(TpmChangeRequest.id.desc())
        .limit(HISTORY)
    )
    return [
        {
            "id": r.id,
            "state": r.state,
            "old_ek_fingerprint": r.old_ek_fingerprint,
            "new_ek_fingerprint": r.ek_fingerprint,
            "certificate": r.ek_certificate is not None,
            "trusted_chain": r.ek_trusted,
            "vendor": r.ek_vendor,
            "address": r.address,
            "requested_at": _iso(r.requested_at),
            "decided_at": _iso(r.decided_at),
            "decided_by": r.decided_by,
            "reason": r.reason,
        }
        for r in rows
    ]


def list_hosts(session: Session, *, removed: bool = False) -> list[dict[str, Any]]:
    """The hosts of the fleet, or with ``removed`` the removed ones (tombstones)."""
    which = Host.removed_at.is_not(None) if removed else Host.removed_at.is_(None)
    query = select(Host).where(which).order_by(Host.name, Host.id)
    return [host_to_dict(session, h) for h in session.scalars(query)]
