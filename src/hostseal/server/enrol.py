"""Enrolment and the host's identity: EK + AK, proved with MakeCredential/ActivateCredential.

``start`` checks the EK certificate against the trust store (when given), wraps a random secret
to the EK and the AK's name, and keeps only the secret's SHA-256, for one use, until it expires.
``finish`` compares the secret the TPM released; a host that proves it holds both keys gets an
agent token. A known host name with a different EK becomes ``tpm-changed`` until an operator
runs ``reconnect`` (audited); a host whose EK has no trusted chain is ``pending-approval`` under
the ``approve`` EK policy until an operator runs ``approve`` (audited).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostseal.errors import HostsealError
from hostseal.server import audit
from hostseal.server.context import ServerContext
from hostseal.server.errors import (
    Conflict,
    CredentialActivationFailed,
    EkNotTrusted,
    EnrolmentExpired,
    EnrolmentUnknown,
    EnrolmentUsed,
    NotFound,
    TpmChanged,
    Unprocessable,
)
from hostseal.server.models import Enrolment, Host
from hostseal.server.tokens import SYSTEM, Principal, issue_agent_token
from hostseal.server.verify import ek_fingerprint

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
ENROLLED, PENDING, TPM_CHANGED = "enrolled", "pending-approval", "tpm-changed"


@dataclass(frozen=True)
class Started:
    enrolment_id: str
    credential_blob: bytes
    encrypted_secret: bytes


@dataclass(frozen=True)
class Finished:
    host: str
    agent_token: str
    status: str


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise Unprocessable(
            f"{name[:80]!r} is not a host name.",
            "Use letters, digits, '.', '-' and '_' (at most 253 characters), as in a DNS name.",
        )
    return name


def start(
    ctx: ServerContext, name: str, ek_public: bytes, ek_certificate: bytes | None, ak_public: bytes
) -> Started:
    check_name(name)
    ak_name = ctx.verifier.ak_name(ak_public)
    trusted = False
    if ek_certificate:
        trusted = ctx.verifier.ek_certificate_trusted(ek_certificate, ek_public, ctx.clock.now())
    if not trusted and ctx.settings.ek_policy == "require-chain":
        why = (
            "its EK certificate does not chain to"
            if ek_certificate
            else "it sent no EK certificate to check against"
        )
        raise EkNotTrusted(
            f"Host {name!r} cannot enrol: {why} a TPM vendor CA in the server's trust store, "
            "and the server's EK policy is require-chain.",
            f"Add the TPM vendor's CA certificates to {ctx.settings.trust_store_dir}, or run "
            "the server with --ek-policy approve and approve the host by hand.",
        )
    secret = os.urandom(32)
    blob, encrypted = ctx.verifier.make_credential(ek_public, ak_name, secret)
    now = ctx.clock.now()
    enrolment_id = secrets.token_urlsafe(24)
    with ctx.sessions.begin() as session:
        session.add(
            Enrolment(
                id=enrolment_id,
                host_name=name,
                ek_public=ek_public,
                ek_certificate=ek_certificate,
                ek_trusted=trusted,
                ak_public=ak_public,
                ak_name=ak_name.hex(),
                secret_sha256=hashlib.sha256(secret).hexdigest(),
                created_at=now,
                expires_at=now + ctx.settings.enrolment_lifetime,
            )
        )
    return Started(enrolment_id, blob, encrypted)


def finish(ctx: ServerContext, enrolment_id: str, secret: bytes) -> Finished:
    """Check the activated secret and enrol; raises after committing what must be recorded."""
    now = ctx.clock.now()
    refusal: HostsealError | None = None
    result: Finished | None = None
    with ctx.sessions.begin() as session:
        enrolment = session.get(Enrolment, enrolment_id)
        if enrolment is None:
            raise EnrolmentUnknown(
                "There is no such enrolment.", "Start again: POST /v1/enrol/start."
            )
        # single use: the first attempt consumes it, whatever its outcome
        consumed = session.execute(
            update(Enrolment)
            .where(Enrolment.id == enrolment_id, Enrolment.used_at.is_(None))
            .values(used_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if consumed != 1:
            raise EnrolmentUsed(
                "This enrolment was already finished once; an enrolment is single use.",
                "Start again: POST /v1/enrol/start.",
            )
        if now >= enrolment.expires_at:
            refusal = EnrolmentExpired(
                f"This enrolment expired at {enrolment.expires_at.isoformat()} (enrolments last "
                f"{int(ctx.settings.enrolment_lifetime.total_seconds())} s).",
                "Start again: POST /v1/enrol/start.",
            )
        elif not hmac.compare_digest(hashlib.sha256(secret).hexdigest(), enrolment.secret_sha256):
            refusal = CredentialActivationFailed(
                f"Host {enrolment.host_name!r} did not return the secret sealed to its EK and "
                "AK: the AK is not in the TPM that holds this EK.",
                "Create the AK under this TPM's EK and enrol again.",
            )
        else:
            result, refusal = _enrol(session, enrolment, now)
    if refusal is not None:
        raise refusal
    assert result is not None
    return result


def _enrol(
    session: Session, enrolment: Enrolment, now: datetime
) -> tuple[Finished | None, HostsealError | None]:
    fingerprint = ek_fingerprint(enrolment.ek_public)
    name = enrolment.host_name
    host = session.scalar(select(Host).where(Host.name == name))
    other = session.scalar(
        select(Host).where(Host.ek_fingerprint == fingerprint, Host.name != name)
    )
    if other is not None:
        return None, Conflict(
            f"This TPM (EK {fingerprint[:16]}...) is already enrolled as host {other.name!r}.",
            f"Enrol under that name, or remove it first: hostseal host remove {other.name}.",
        )
    status = ENROLLED if enrolment.ek_trusted else PENDING
    if host is None:
        host = Host(name=name, status=status, enrolled_at=now, last_messages=[])
        session.add(host)
        action = "host.enrolled"
    elif host.ek_fingerprint == fingerprint:
        # the same TPM again (agent reinstalled, new AK, or the original TPM came back)
        status = PENDING if host.status == PENDING else ENROLLED
        action = "host.re-enrolled"
    elif host.reconnect_allowed and host.new_ek_fingerprint in (None, fingerprint):
        status = ENROLLED  # the operator sanctioned the new TPM with 'reconnect'
        action = "host.tpm-replaced"
    else:
        old = host.ek_fingerprint
        host.status = TPM_CHANGED
        host.new_ek_fingerprint = fingerprint
        host.reconnect_allowed = False
        audit.record(
            session,
            SYSTEM,
            "host.tpm-changed",
            now=now,
            host=name,
            details={"old_ek_fingerprint": old, "new_ek_fingerprint": fingerprint},
        )
        return None, TpmChanged(
            f"Host {name!r} is enrolled with another TPM (EK fingerprint {old}); this TPM's EK "
            f"fingerprint is {fingerprint}. The host is reported as TPM changed and is not "
            "re-enrolled.",
            f"If the TPM or the system board of {name} was replaced, an operator runs "
            f"'hostseal host reconnect {name} --reason ...' on the server; then enrol again.",
            {"old_ek_fingerprint": old, "new_ek_fingerprint": fingerprint},
        )
    old_fingerprint = host.ek_fingerprint if host.id is not None else None
    host.status = status
    host.ek_public = enrolment.ek_public
    host.ek_fingerprint = fingerprint
    host.ek_certificate = enrolment.ek_certificate
    host.ek_trusted = enrolment.ek_trusted
    host.ak_public = enrolment.ak_public
    host.ak_name = enrolment.ak_name
    host.new_ek_fingerprint = None
    host.reconnect_allowed = False
    if action == "host.tpm-replaced":
        host.last_eventlog = None
        host.last_pcrs = None
    session.flush()
    token = issue_agent_token(session, host, now)
    details = {"ek_fingerprint": fingerprint, "ek_trusted": enrolment.ek_trusted, "status": status}
    if old_fingerprint and old_fingerprint != fingerprint:
        details["old_ek_fingerprint"] = old_fingerprint
    audit.record(session, SYSTEM, action, now=now, host=name, details=details)
    return Finished(name, token, status), None


def get_host(session: Session, name: str) -> Host:
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NotFound(f"There is no host {name!r}.", "List the hosts: hostseal host list.")
    return host


def approve(ctx: ServerContext, name: str, who: Principal, reason: str) -> Host:
    reason = audit.require_reason(reason, "approve a host")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = get_host(session, name)
        if host.status != PENDING:
            raise Conflict(
                f"Host {name!r} is not pending approval (its status is {host.status}).",
                "Only hosts whose EK has no trusted certificate chain wait for approval.",
            )
        host.status = ENROLLED
        audit.record(
            session,
            who,
            "host.approved",
            now=now,
            host=name,
            reason=reason,
            details={"ek_fingerprint": host.ek_fingerprint},
        )
        return host


def reconnect(ctx: ServerContext, name: str, who: Principal, reason: str) -> Host:
    """Accept the host's next enrolment with a new EK: the one it presented if it is
    ``tpm-changed``, any EK otherwise (before a planned TPM or board replacement)."""
    reason = audit.require_reason(reason, "reconnect a host")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = get_host(session, name)
        host.reconnect_allowed = True
        audit.record(
            session,
            who,
            "host.reconnect",
            now=now,
            host=name,
            reason=reason,
            details={
                "ek_fingerprint": host.ek_fingerprint,
                "accepted_ek_fingerprint": host.new_ek_fingerprint,
                "status": host.status,
            },
        )
        return host


def remove(ctx: ServerContext, name: str, who: Principal, reason: str) -> None:
    """Remove the host, its verdicts, alarms and agent tokens; its escrowed keys are kept."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = get_host(session, name)
        details = {"ek_fingerprint": host.ek_fingerprint, "status": host.status}
        session.delete(host)
        audit.record(
            session, who, "host.removed", now=now, host=name, reason=reason, details=details
        )
