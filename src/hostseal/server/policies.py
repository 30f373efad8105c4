"""Reference policies: stored as the JSON documents :mod:`hostseal.attest.policy` reads.

An empty or accept-everything policy is refused (422): a policy must name measurements to
compare. A policy takes effect for its hosts at their next attestation.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostseal.server import audit
from hostseal.server.context import ServerContext
from hostseal.server.enrol import check_name, get_host
from hostseal.server.errors import Conflict, NotFound, PolicyRefused
from hostseal.server.models import Host, Policy
from hostseal.server.tokens import Principal
from hostseal.server.verify import PolicyFacts


def _get(session: Session, name: str) -> Policy:
    row = session.scalar(select(Policy).where(Policy.name == name))
    if row is None:
        raise NotFound(
            f"There is no reference policy {name!r}.", "List them: hostseal policy list."
        )
    return row


def _hosts(session: Session, name: str) -> list[str]:
    return list(session.scalars(select(Host.name).where(Host.policy_name == name)))


def to_dict(session: Session, ctx: ServerContext, row: Policy, *, full: bool) -> dict[str, Any]:
    facts = ctx.verifier.check_policy(row.name, row.document)
    data: dict[str, Any] = {
        "name": row.name,
        "bank": facts.bank,
        "pcrs": list(facts.pcrs),
        "hosts": _hosts(session, row.name),
        "updated_at": row.updated_at.isoformat(),
        "updated_by": row.updated_by,
    }
    if full:
        data["policy"] = json.loads(row.document)
    return data


def list_policies(ctx: ServerContext) -> list[dict[str, Any]]:
    with ctx.sessions() as session:
        rows = session.scalars(select(Policy).order_by(Policy.name))
        return [to_dict(session, ctx, row, full=False) for row in rows]


def get_policy(ctx: ServerContext, name: str) -> dict[str, Any]:
    with ctx.sessions() as session:
        return to_dict(session, ctx, _get(session, name), full=True)


def _save(session: Session, ctx: ServerContext, facts: PolicyFacts, who: Principal) -> Policy:
    now = ctx.clock.now()
    row = session.scalar(select(Policy).where(Policy.name == facts.name))
    if row is None:
        row = Policy(
            name=facts.name,
            document=facts.document,
            digest=facts.digest,
            updated_at=now,
            updated_by=who.name,
        )
        session.add(row)
    else:
        row.document, row.digest = facts.document, facts.digest
        row.updated_at, row.updated_by = now, who.name
    session.flush()
    return row


def put_policy(ctx: ServerContext, name: str, document: Any, who: Principal) -> dict[str, Any]:
    check_name(name)
    if not isinstance(document, dict) or not document:
        raise PolicyRefused(
            f"The reference policy {name!r} is empty: it would accept every host.",
            "Send a policy with the PCR values or events to expect, or capture one from a "
            "known-good host: hostseal policy capture NAME --host HOST.",
        )
    if document.get("name") not in (None, name):
        raise PolicyRefused(
            f"The policy document is named {document['name']!r}, not {name!r}.",
            "Use the same name in the URL and the document.",
        )
    facts = ctx.verifier.check_policy(name, json.dumps({**document, "name": name}))
    with ctx.sessions.begin() as session:
        row = _save(session, ctx, facts, who)
        audit.record(session, who, "policy.set", now=ctx.clock.now(), details={"policy": name})
        return to_dict(session, ctx, row, full=True)


def capture(ctx: ServerContext, name: str, host_name: str, who: Principal) -> dict[str, Any]:
    """A policy from the host's last verified evidence, assigned to that host."""
    check_name(name)
    with ctx.sessions.begin() as session:
        host = get_host(session, host_name)
        if host.last_pcrs is None:
            raise Conflict(
                f"Host {host_name!r} has sent no verified quote since it was enrolled.",
                "Wait for its agent's next report (or restart the agent), then capture.",
            )
        pcrs = {
            bank: {int(i): bytes.fromhex(v) for i, v in values.items()}
            for bank, values in host.last_pcrs.items()
        }
        facts = ctx.verifier.capture(name, host.last_eventlog, pcrs)
        row = _save(session, ctx, facts, who)
        host.policy_name = name
        audit.record(
            session,
            who,
            "policy.captured",
            now=ctx.clock.now(),
            host=host_name,
            details={"policy": name},
        )
        return to_dict(session, ctx, row, full=True)


def assign(ctx: ServerContext, host_name: str, name: str | None, who: Principal) -> None:
    with ctx.sessions.begin() as session:
        host = get_host(session, host_name)
        if name is not None:
            _get(session, name)
        old = host.policy_name
        host.policy_name = name
        audit.record(
            session,
            who,
            "policy.assigned",
            now=ctx.clock.now(),
            host=host_name,
            details={"policy": name, "previous": old},
        )


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Policy)) or 0)
