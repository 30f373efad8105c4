"""Attestation: challenge -> evidence -> verdict -> alarms, and hosts that stop reporting.

A challenge is a fresh 32-byte nonce for one host, single use, expiring after ``nonce_lifetime``.
Evidence names its nonce; the nonce is consumed before anything else is checked, so a quote is
never accepted twice. Refusals of the nonce (unknown, replayed, expired) answer 409 and are
recorded in the audit log without changing the host's status (an agent simply asks for a new
challenge). Evidence that does not verify (signature, another host's AK, PCR digest, tampered
event log) is a Failed verdict, kept in the history, and answers 422 with the reason.

A host without a reference policy is never Passed: its verdict is Warning ("no reference
policy assigned") once its quote verifies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostseal.errors import HostsealError
from hostseal.server import alarms, audit, escrow
from hostseal.server.context import ServerContext
from hostseal.server.enrol import ENROLLED, PENDING, TPM_CHANGED
from hostseal.server.errors import (
    HostNotTrusted,
    NonceExpired,
    NonceReplayed,
    NonceUnknown,
    NotFound,
    Unprocessable,
)
from hostseal.server.models import Challenge, Enrolment, Host, Policy, Verdict
from hostseal.server.tokens import Principal
from hostseal.server.verify import (
    DEFAULT_BANK,
    DEFAULT_PCRS,
    CheckedEvidence,
    Outcome,
    PolicyFacts,
)

NOT_REPORTING = "not-reporting"
ATTESTED = ("passed", "failed", "warning", ENROLLED)
NO_POLICY = (
    "No reference policy is assigned to this host: its quote and event log verified, but its "
    "measurements were not compared with known-good values. Assign one: hostseal policy "
    "capture NAME --host HOST, or hostseal policy assign NAME HOST."
)


class QuoteFromAnotherHost(Unprocessable):
    """The quote verifies with another enrolled host's AK: evidence from another machine."""


@dataclass(frozen=True)
class Evidence:
    nonce: str
    quote: bytes
    signature: bytes
    pcrs: dict[str, dict[int, bytes]]
    eventlog: bytes | None
    secure_config: dict[str, Any] | None


def _may_attest(host: Host) -> None:
    if host.status == PENDING:
        raise HostNotTrusted(
            f"Host {host.name!r} waits for approval: its EK has no trusted certificate chain.",
            f"An operator approves it: hostseal host approve {host.name} --reason ...",
        )
    if host.status == TPM_CHANGED:
        raise HostNotTrusted(
            f"Host {host.name!r} presented a different TPM (EK {host.new_ek_fingerprint}) and "
            "is reported as TPM changed.",
            f"An operator runs 'hostseal host reconnect {host.name} --reason ...', then the "
            "agent enrols again.",
        )


def policy_of(session: Session, ctx: ServerContext, host: Host) -> PolicyFacts | None:
    if host.policy_name is None:
        return None
    row = session.scalar(select(Policy).where(Policy.name == host.policy_name))
    if row is None:
        return None
    return ctx.verifier.check_policy(row.name, row.document)


def challenge(ctx: ServerContext, host_id: int) -> dict[str, Any]:
    now = ctx.clock.now()
    nonce = secrets.token_bytes(32).hex()
    with ctx.sessions.begin() as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFound("This agent's host was removed.", "Enrol the host again.")
        _may_attest(host)
        policy = policy_of(session, ctx, host)
        expires = now + ctx.settings.nonce_lifetime
        session.add(Challenge(nonce=nonce, host_id=host.id, created_at=now, expires_at=expires))
    return {
        "nonce": nonce,
        "expires_at": expires.isoformat(),
        "bank": policy.bank if policy else DEFAULT_BANK,
        "pcrs": list(policy.pcrs if policy else DEFAULT_PCRS),
    }


def _consume(session: Session, host: Host, nonce: str, now: datetime) -> HostsealError | None:
    """Mark the nonce used (atomically); the refusal when it cannot be used."""
    row = session.scalar(select(Challenge).where(Challenge.nonce == nonce.lower()))
    if row is None or row.host_id != host.id:
        return NonceUnknown(
            f"The nonce {nonce[:16]}... was not issued to host {host.name!r}.",
            "Ask for a challenge (POST /v1/attest/challenge) and quote its nonce.",
        )
    consumed = session.execute(
        update(Challenge)
        .where(Challenge.id == row.id, Challenge.used_at.is_(None))
        .values(used_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if consumed != 1:
        return NonceReplayed(
            f"The nonce {nonce[:16]}... was already used: this is a replayed quote, refused.",
            "Each quote needs a fresh challenge: POST /v1/attest/challenge.",
        )
    if now >= row.expires_at:
        return NonceExpired(
            f"The nonce {nonce[:16]}... expired at {row.expires_at.isoformat()} (nonces are "
            "valid for a limited time).",
            "Ask for a new challenge and send the quote at once.",
        )
    return None


def submit_evidence(
    ctx: ServerContext, agent: Principal, host_id: int, evidence: Evidence
) -> Outcome:
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFound("This agent's host was removed.", "Enrol the host again.")
        _may_attest(host)
        refusal = _consume(session, host, evidence.nonce, now)
        if refusal is not None:
            audit.record(
                session,
                agent,
                "attest.refused",
                now=now,
                host=host.name,
                reason=refusal.message,
                details={"error": type(refusal).__name__},
            )
        policy = policy_of(session, ctx, host)
        ak_public, name = host.ak_public, host.name
    if refusal is not None:
        raise refusal

    error: HostsealError | None = None
    checked: CheckedEvidence | None = None
    try:
        checked = ctx.verifier.verify_quote(
            ak_public,
            evidence.quote,
            evidence.signature,
            nonce=bytes.fromhex(evidence.nonce),
            pcrs=evidence.pcrs,
            eventlog=evidence.eventlog,
        )
    except HostsealError as exc:
        error = _other_signer(ctx, host_id, name, evidence, exc)
    if checked is None:
        assert error is not None
        outcome = Outcome("Failed", [error.message])
    elif policy is None:
        outcome = Outcome("Warning", [NO_POLICY])
    else:
        outcome = ctx.verifier.evaluate(policy, checked)
    _store(ctx, host_id, evidence, checked, outcome, policy, error, now)
    if error is not None:
        raise error
    return outcome


def _other_signer(
    ctx: ServerContext, host_id: int, name: str, evidence: Evidence, exc: HostsealError
) -> HostsealError:
    """A clearer error when the quote is signed by another enrolled host's AK."""
    if type(exc).__name__ != "QuoteSignatureInvalid":
        return exc
    with ctx.sessions() as session:
        others = session.execute(
            select(Host.name, Host.ak_public).where(Host.id != host_id).limit(10000)
        ).all()
    for other_name, other_ak in others:
        if ctx.verifier.signed_by(other_ak, evidence.quote, evidence.signature):
            return QuoteFromAnotherHost(
                f"The quote sent for host {name!r} was signed by the attestation key of host "
                f"{other_name!r}: it is evidence from another machine, refused.",
                f"Check which machine runs the agent enrolled as {name!r}; a copied agent "
                "token is a security incident.",
                {"signer": other_name},
            )
    return exc


def _store(
    ctx: ServerContext,
    host_id: int,
    evidence: Evidence,
    checked: CheckedEvidence | None,
    outcome: Outcome,
    policy: PolicyFacts | None,
    error: HostsealError | None,
    now: datetime,
) -> None:
    with ctx.sessions.begin() as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFound("This agent's host was removed.", "Enrol the host again.")
        session.add(
            Verdict(
                host_id=host.id,
                at=now,
                status=outcome.status,
                messages=outcome.messages,
                policy_name=policy.name if policy else None,
                error=type(error).__name__ if error else None,
            )
        )
        host.status = outcome.status.lower()
        host.last_status = outcome.status
        host.last_messages = outcome.messages
        host.last_attested_at = now
        if checked is not None:
            host.last_eventlog = evidence.eventlog
            host.last_pcrs = {
                bank: {str(i): v.hex() for i, v in values.items()}
                for bank, values in checked.pcrs.items()
            }
        if evidence.secure_config is not None:
            host.secure_config = evidence.secure_config
        if outcome.status == "Failed":
            message = f"Attestation of host {host.name!r} failed: " + "; ".join(outcome.messages)
            alarms.ensure_raised(session, host, alarms.ATTESTATION, message, now)
        elif outcome.status == "Passed":
            alarms.ensure_cleared(
                session, host, alarms.ATTESTATION, "the host's attestation passed", now
            )
        escrow.reevaluate_alarm(session, host, now)


def mark_stale(session: Session, now: datetime, stale_after: timedelta) -> list[str]:
    """Hosts that have not attested for ``stale_after`` become ``not-reporting`` (not failed)."""
    limit = now - stale_after
    marked = []
    for host in session.scalars(select(Host).where(Host.status.in_(ATTESTED))):
        last = host.last_attested_at or host.enrolled_at
        if last < limit:
            host.status = NOT_REPORTING
            marked.append(host.name)
            audit.record(
                session,
                Principal("hostseal", "system"),
                "host.not-reporting",
                now=now,
                host=host.name,
                details={"last_attested_at": last.isoformat()},
            )
    return marked


def prune(session: Session, now: datetime, keep: timedelta = timedelta(days=1)) -> int:
    """Delete challenges and enrolments that expired more than ``keep`` ago (used or not)."""
    limit = now - keep
    old: list[Challenge | Enrolment] = [
        *session.scalars(select(Challenge).where(Challenge.expires_at < limit)),
        *session.scalars(select(Enrolment).where(Enrolment.expires_at < limit)),
    ]
    for row in old:
        session.delete(row)
    return len(old)
