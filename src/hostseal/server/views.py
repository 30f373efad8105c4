"""Hosts as the API shows them (the JSON of ``GET /v1/hosts`` and ``GET /v1/hosts/{name}``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Executable, func, select
from sqlalchemy.orm import Session

from hostseal.server import alarms, escrow
from hostseal.server.models import Alarm, Host, Verdict

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
        "status": host.status,
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
    }
    if history:
        verdicts = session.scalars(
            select(Verdict)
            .where(Verdict.host_id == host.id)
            .order_by(Verdict.id.desc())
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


def list_hosts(session: Session) -> list[dict[str, Any]]:
    return [host_to_dict(session, h) for h in session.scalars(select(Host).order_by(Host.name))]


def _counts(session: Session, query: Executable) -> dict[str, int]:
    return {str(key): int(value) for key, value in session.execute(query)}


def metrics(session: Session) -> str:
    """Prometheus text exposition (version 0.0.4)."""
    lines = [
        "# HELP hostseal_hosts Hosts by status.",
        "# TYPE hostseal_hosts gauge",
    ]
    by_status = _counts(session, select(Host.status, func.count()).group_by(Host.status))
    for status in (
        "passed",
        "failed",
        "warning",
        "not-reporting",
        "tpm-changed",
        "pending-approval",
        "enrolled",
    ):
        lines.append(f'hostseal_hosts{{status="{status}"}} {by_status.get(status, 0)}')
    lines += [
        "# HELP hostseal_verdicts_total Attestation verdicts recorded, by status.",
        "# TYPE hostseal_verdicts_total counter",
    ]
    verdicts = _counts(session, select(Verdict.status, func.count()).group_by(Verdict.status))
    for status in ("Passed", "Failed", "Warning"):
        lines.append(f'hostseal_verdicts_total{{status="{status}"}} {verdicts.get(status, 0)}')
    lines += [
        "# HELP hostseal_alarms_raised Alarms not cleared (raised or acknowledged), by kind.",
        "# TYPE hostseal_alarms_raised gauge",
    ]
    raised = _counts(
        session,
        select(Alarm.kind, func.count()).where(Alarm.state != alarms.CLEARED).group_by(Alarm.kind),
    )
    for kind in alarms.TITLES:
        lines.append(f'hostseal_alarms_raised{{kind="{kind}"}} {raised.get(kind, 0)}')
    return "\n".join(lines) + "\n"
