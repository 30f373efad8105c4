"""Reference policies: stored as the JSON documents :mod:`hostseal.attest.policy` reads.

An empty or accept-everything policy is refused (422): a policy must name measurements to
compare. A policy takes effect for its hosts at their next attestation.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostseal.errors import HostsealError
from hostseal.server import audit
from hostseal.server.context import ServerContext
from hostseal.server.enrol import get_host
from hostseal.server.errors import Conflict, NotFound, PolicyRefused
from hostseal.server.hostnames import check_name
from hostseal.server.storage.models import Host, Policy
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
    return list(
        session.scalars(
            select(Host.name).where(Host.policy_name == name, Host.removed_at.is_(None))
        )
    )


def to_dict(session: Session, ctx: ServerContext, row: Policy, *, full: bool) -> dict[str, Any]:
    facts = ctx.verifier.check_policy(row.name, row.document)
    data: dict[str, Any] = {
        "name": row.name,
        "bank": facts.bank,
        "pcrs": list(facts.pcrs),
        "hosts": _hosts(session, row.name),
        "updated_at": row.updated_at.isoformat(),
        "updated_by": row.updated_by,
        "digest": row.digest,
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


def put_policy(
    ctx: ServerContext, name: str, document: Any, who: Principal, reason: str | None
) -> dict[str, Any]:
    check_name(name)
    why = audit.require_reason(reason, f"change the reference policy {name!r}")
    if not isinstance(document, dict) or not document:
        raise PolicyRefused(
            f"The reference policy {name!r} is empty: it would accept every host.",
            "Send a policy with the PCR values or events to expect, or capture one from a "
            "known-good host: hostseal policy capture NAME --host HOST --reason WHY.",
        )
    if document.get("name") not in (None, name):
        raise PolicyRefused(
            f"The policy document is named {document['name']!r}, not {name!r}.",
            "Use the same name in the URL and the document.",
        )
    facts = ctx.verifier.check_policy(name, json.dumps({**document, "name": name}))
    with ctx.sessions.begin() as session:
        before = _version(session, name)
        row = _save(session, ctx, facts, who)
        audit.record(
            session,
            who,
            "policy.set",
            now=ctx.clock.now(),
            reason=why,
            details=_edit_details(name, before, facts),
        )
        return to_dict(session, ctx, row, full=True)


def capture(
    ctx: ServerContext, name: str, host_name: str, who: Principal, reason: str | None
) -> dict[str, Any]:
    """A policy from the host's last verified evidence, assigned to that host."""
    check_name(name)
    why = audit.require_reason(reason, f"capture the reference policy {name!r}")
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
        before = _version(session, name)
        assigned_before = _named(session, host.policy_name)
        row = _save(session, ctx, facts, who)
        host.policy_name = name
        details = _edit_details(name, before, facts)
        details["assigned"] = {
            "host": host_name,
            "old": assigned_before,
            "new": {"name": name, "digest": facts.digest},
        }
        audit.record(
            session,
            who,
            "policy.captured",
            now=ctx.clock.now(),
            host=host_name,
            reason=why,
            details=details,
        )
        return to_dict(session, ctx, row, full=True)


def assign(
    ctx: ServerContext, host_name: str, name: str | None, who: Principal, reason: str | None
) -> None:
    doing = f"assign a reference policy to host {host_name!r}"
    why = audit.require_reason(reason, doing if name else f"unassign the policy of {host_name!r}")
    with ctx.sessions.begin() as session:
        host = get_host(session, host_name)
        new_row = _get(session, name) if name is not None else None
        old = host.policy_name
        old_row = session.scalar(select(Policy).where(Policy.name == old)) if old else None
        host.policy_name = name
        audit.record(
            session,
            who,
            "policy.assigned",
            now=ctx.clock.now(),
            host=host_name,
            reason=why,
            details={
                "policy": name,
                "previous": old,
                "old": _named(session, old),
                "new": _named(session, name),
                **_assignment_diff(old, old_row, new_row),
            },
        )


# --- what a change did, for the audit log ---------------------------------------------------

POLICY_ACTIONS = ("policy.set", "policy.captured", "policy.assigned")


def _version(session: Session, name: str) -> tuple[str, str] | None:
    """The stored document and digest of policy ``name`` (None: there is none yet)."""
    row = session.scalar(select(Policy).where(Policy.name == name))
    return (row.document, row.digest) if row is not None else None


def _named(session: Session, name: str | None) -> dict[str, Any] | None:
    if name is None:
        return None
    row = session.scalar(select(Policy).where(Policy.name == name))
    return {"name": name, "digest": row.digest if row is not None else None}


def _summary(old_document: str | None, new_document: str) -> dict[str, Any]:
    """:func:`hostseal.attest.policy_diff.diff_policies` of two stored documents, as JSON."""
    from hostseal.attest.policy import ReferencePolicy
    from hostseal.attest.policy_diff import diff_policies

    new = ReferencePolicy.from_json(new_document)
    try:
        old = ReferencePolicy.from_json(old_document) if old_document is not None else None
    except HostsealError:
        return {
            "summary": "the previous version cannot be read, so what changed is not known",
            "loosened": True,
            "changes": [],
        }
    return diff_policies(old, new).to_dict()


def _edit_details(name: str, before: tuple[str, str] | None, facts: PolicyFacts) -> dict[str, Any]:
    return {
        "policy": name,
        "created": before is None,
        "old_digest": before[1] if before is not None else None,
        "new_digest": facts.digest,
        **_summary(before[0] if before is not None else None, facts.document),
    }


def _assignment_diff(
    old: str | None, old_row: Policy | None, new_row: Policy | None
) -> dict[str, Any]:
    if new_row is None:
        if old is None:
            return {
                "summary": "no change (no policy before or after)",
                "loosened": False,
                "changes": [],
            }
        text = f"policy {old!r} unassigned: the host is compared with no policy (never Passed)"
        change = {"field": "policy", "kind": "tightened", "text": text}
        return {"summary": text, "loosened": False, "changes": [change]}
    if old_row is None:
        text = (
            f"policy {new_row.name!r} assigned (was {'none' if old is None else repr(old)}): "
            "the host can pass from its next attestation"
        )
        change = {"field": "policy", "kind": "loosened", "text": text}
        return {"summary": text, "loosened": True, "changes": [change]}
    return _summary(old_row.document, new_row.document)


def history(session: Session, name: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The audited changes of policy ``name`` (edits, captures, assignments to and from hosts),
    newest first."""
    found = []
    for action in POLICY_ACTIONS:
        for event in audit.events(session, action=action, limit=1000):
            details = event.details or {}
            if name in (details.get("policy"), details.get("previous")):
                found.append(event)
    found.sort(key=lambda e: e.id, reverse=True)
    return [audit.to_dict(e) for e in found[:limit]]


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Policy)) or 0)
