"""Enrolment and the host's identity: EK + AK, proved with MakeCredential/ActivateCredential.

``start`` checks the EK certificate against the trust store (when given), wraps a random secret
to the EK and the AK's name, and keeps only the secret's SHA-256, for one use, until it expires.
``finish`` compares the secret the TPM released; a host that proves it holds both keys gets an
agent token. A host whose EK has no trusted chain is ``pending-approval`` under the ``approve``
EK policy until an operator runs ``approve`` (audited).

Enrolment takes no token, so it never changes an existing host: a TPM that proves possession of
another EK under a known name becomes a :class:`TpmChangeRequest` beside the host (at most
``MAX_OPEN_REQUESTS`` open per host, one per EK), and the host, its agent token and its verdicts
stay as they were. Only an operator's audited ``accept_tpm`` on that request (or a pre-planned
``reconnect``) lets the new TPM's next enrolment replace the EK; an EK without a trusted vendor
chain is then still ``pending-approval``. A removed host stays as a tombstone (``removed_at``)
with its history; its name may enrol again as a new host. With ``HOSTSEAL_SERVER_ENROLMENT=token``
enrolment also needs an enrolment token (:mod:`hostseal.server.enroltokens`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostseal.errors import HostsealError
from hostseal.server import audit, enroltokens
from hostseal.server.context import ServerContext
from hostseal.server.errors import (
    Conflict,
    CredentialActivationFailed,
    EkNotTrusted,
    EnrolmentExpired,
    EnrolmentUnknown,
    EnrolmentUsed,
    NotFound,
    TooManyTpmChangeRequests,
    TpmChangeRejected,
    TpmChangeRequested,
)
from hostseal.server.hostnames import check_name
from hostseal.server.storage.models import Enrolment, Host, StoredVerdict, Token, TpmChangeRequest
from hostseal.server.tokens import SYSTEM, Principal, issue_agent_token
from hostseal.server.verify import ek_fingerprint

ENROLLED, PENDING = "enrolled", "pending-approval"
REMOVED = "removed"  # shown for a tombstone; never stored in hosts.status
# open TPM change requests kept per host name; more are refused (429) until an operator decides
MAX_OPEN_REQUESTS = 5
OPEN, ACCEPTED, REJECTED = "open", "accepted", "rejected"


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


def start(
    ctx: ServerContext,
    name: str,
    ek_public: bytes,
    ek_certificate: bytes | None,
    ak_public: bytes,
    enrolment_token: str | None = None,
) -> Started:
    """Check the EK (and, with ``HOSTSEAL_SERVER_ENROLMENT=token``, the enrolment token) and
    make the credential."""
    check_name(name)
    token_id = None
    if ctx.settings.enrolment == "token":
        with ctx.sessions() as session:
            token_id = enroltokens.check(session, enrolment_token, name, ctx.clock.now())
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
                token_id=token_id,
            )
        )
    return Started(enrolment_id, blob, encrypted)


def finish(
    ctx: ServerContext, enrolment_id: str, secret: bytes, address: str | None = None
) -> Finished:
    """Check the activated secret and enrol; raises after committing what must be recorded.
    ``address`` is the HTTP client's address, kept on a TPM change request."""
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
            result, refusal = _enrol(ctx, session, enrolment, now, address)
    if refusal is not None:
        raise refusal
    assert result is not None
    return result


def _enrol(
    ctx: ServerContext,
    session: Session,
    enrolment: Enrolment,
    now: datetime,
    address: str | None,
) -> tuple[Finished | None, HostsealError | None]:
    fingerprint = ek_fingerprint(enrolment.ek_public)
    name = enrolment.host_name
    host = session.scalar(select(Host).where(Host.name == name, Host.removed_at.is_(None)))
    other = session.scalar(
        select(Host).where(
            Host.ek_fingerprint == fingerprint, Host.name != name, Host.removed_at.is_(None)
        )
    )
    if other is not None:
        return None, Conflict(
            f"This TPM (EK {fingerprint[:16]}...) is already enrolled as host {other.name!r}.",
            f"Enrol under that name, or remove it first: hostseal host remove {other.name}.",
        )
    accepted = (None, fingerprint)
    requested = (
        host is not None
        and host.ek_fingerprint != fingerprint
        and not (host.reconnect_allowed and host.new_ek_fingerprint in accepted)
    )
    # an agent token is issued below: the enrolment token is used up now (a TPM change request
    # does not use it: that TPM enrols with it once the request is accepted)
    token_id = enrolment.token_id
    if token_id is not None and not requested and not enroltokens.use(session, token_id):
        return None, enroltokens.used_up()
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
        # the operator sanctioned the new TPM ('accept-tpm' on its request, or a planned
        # 'reconnect'); an EK without a trusted vendor chain still waits for approval
        action = "host.tpm-replaced"
    else:
        return None, _request_change(ctx, session, host, enrolment, fingerprint, now, address)
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


def _request_change(
    ctx: ServerContext,
    session: Session,
    host: Host,
    enrolment: Enrolment,
    fingerprint: str,
    now: datetime,
    address: str | None,
) -> HostsealError:
    """Keep another TPM under a known name as a request beside the host (one per EK, at most
    MAX_OPEN_REQUESTS open per host); the host is not touched. Returns the agent's answer."""
    name = host.name
    mine = session.scalars(
        select(TpmChangeRequest)
        .where(TpmChangeRequest.host_id == host.id, TpmChangeRequest.ek_fingerprint == fingerprint)
        .order_by(TpmChangeRequest.id.desc())
    ).first()
    if mine is not None and mine.state == REJECTED:
        return TpmChangeRejected(
            f"Host {name!r} is enrolled with another TPM, and an operator rejected this TPM "
            f"(EK fingerprint {fingerprint}) for it in request {mine.id}: it is not enrolled.",
            "If this TPM really belongs to the host, ask the operators to check request "
            f"{mine.id} (hostseal host show {name}) and to accept a new request.",
            {"request_id": mine.id},
        )
    if mine is None or mine.state != OPEN:
        open_count = len(
            session.scalars(
                select(TpmChangeRequest.id).where(
                    TpmChangeRequest.host_id == host.id, TpmChangeRequest.state == OPEN
                )
            ).all()
        )
        if open_count >= MAX_OPEN_REQUESTS:
            return TooManyTpmChangeRequests(
                f"Host {name!r} already has {MAX_OPEN_REQUESTS} open TPM change requests; "
                "this TPM's enrolment was not recorded and the host is not changed.",
                f"An operator reviews them (hostseal host show {name}) and decides each one: "
                f"hostseal host reject-tpm {name} --request ID --reason ..., or accept-tpm; "
                "then enrol again.",
            )
        trusted = enrolment.ek_trusted
        vendor = None
        if trusted and enrolment.ek_certificate:
            vendor = ctx.verifier.ek_vendor(enrolment.ek_certificate, enrolment.ek_public, now)
        mine = TpmChangeRequest(
            host_id=host.id,
            old_ek_fingerprint=host.ek_fingerprint,
            ek_fingerprint=fingerprint,
            ek_public=enrolment.ek_public,
            ek_certificate=enrolment.ek_certificate,
            ek_trusted=trusted,
            ek_vendor=vendor,
            address=address,
            requested_at=now,
            state=OPEN,
            reason="",
        )
        session.add(mine)
        session.flush()
        audit.record(
            session,
            SYSTEM,
            "host.tpm-change-requested",
            now=now,
            host=name,
            details={
                "request_id": mine.id,
                "old_ek_fingerprint": host.ek_fingerprint,
                "new_ek_fingerprint": fingerprint,
                "ek_trusted": trusted,
                "address": address,
            },
        )
    return TpmChangeRequested(
        f"Host {name!r} is enrolled with another TPM (EK fingerprint {host.ek_fingerprint}); "
        f"this TPM (EK fingerprint {fingerprint}) is not enrolled. It is kept as TPM change "
        f"request {mine.id} for an operator to decide; until then the host keeps its enrolled "
        "TPM and nothing about it changes.",
        f"If the TPM or the system board of {name} was replaced, an operator checks the request "
        f"(hostseal host show {name}) and runs 'hostseal host accept-tpm {name} --request "
        f"{mine.id} --reason ...'; then this agent enrols again. Otherwise the operator runs "
        f"'hostseal host reject-tpm {name} --request {mine.id} --reason ...'.",
        {
            "request_id": mine.id,
            "old_ek_fingerprint": host.ek_fingerprint,
            "new_ek_fingerprint": fingerprint,
        },
    )


def get_host(session: Session, name: str) -> Host:
    """The host of that name that is not removed (404 otherwise)."""
    host = session.scalar(select(Host).where(Host.name == name, Host.removed_at.is_(None)))
    if host is None:
        raise NotFound(f"There is no host {name!r}.", "List the hosts: hostseal host list.")
    return host


def get_host_or_tombstone(session: Session, name: str) -> Host:
    """The host of that name, else the most recently removed host of that name."""
    host = session.scalars(
        select(Host)
        .where(Host.name == name)
        .order_by(Host.removed_at.is_not(None), Host.removed_at.desc())
    ).first()
    if host is None:
        raise NotFound(
            f"There is no host {name!r}, and none was removed.",
            "List the hosts: hostseal host list.",
        )
    return host


def _change_request(session: Session, name: str, request_id: int) -> tuple[Host, TpmChangeRequest]:
    host = get_host(session, name)
    request = session.get(TpmChangeRequest, request_id)
    if request is None or request.host_id != host.id:
        raise NotFound(
            f"Host {name!r} has no TPM change request {request_id}.",
            f"See the host's requests: hostseal host show {name}.",
        )
    if request.state != OPEN:
        when = request.decided_at.isoformat() if request.decided_at else "?"
        raise Conflict(
            f"TPM change request {request_id} of host {name!r} is {request.state} already "
            f"({request.decided_by}, {when}).",
            "Only an open request can be decided; a new enrolment of that TPM makes a new one.",
        )
    return host, request


def accept_tpm(
    ctx: ServerContext, name: str, request_id: int, who: Principal, reason: str
) -> TpmChangeRequest:
    """Let the TPM of an open change request enrol as the host at its next enrolment (which
    proves possession again); approval is still needed when its EK has no trusted chain."""
    reason = audit.require_reason(reason, "accept a host's new TPM")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host, request = _change_request(session, name, request_id)
        request.state, request.decided_at, request.decided_by = ACCEPTED, now, who.name
        request.reason = reason
        host.new_ek_fingerprint = request.ek_fingerprint
        host.reconnect_allowed = True
        audit.record(
            session,
            who,
            "host.tpm-change-accepted",
            now=now,
            host=name,
            reason=reason,
            details={
                "request_id": request.id,
                "old_ek_fingerprint": host.ek_fingerprint,
                "new_ek_fingerprint": request.ek_fingerprint,
                "ek_trusted": request.ek_trusted,
                "address": request.address,
                "status": host.status,
            },
        )
        return request


def reject_tpm(
    ctx: ServerContext, name: str, request_id: int, who: Principal, reason: str
) -> TpmChangeRequest:
    """Close an open change request: that TPM's enrolments under the name are refused."""
    reason = audit.require_reason(reason, "reject a host's new TPM")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host, request = _change_request(session, name, request_id)
        request.state, request.decided_at, request.decided_by = REJECTED, now, who.name
        request.reason = reason
        audit.record(
            session,
            who,
            "host.tpm-change-rejected",
            now=now,
            host=name,
            reason=reason,
            details={
                "request_id": request.id,
                "old_ek_fingerprint": host.ek_fingerprint,
                "new_ek_fingerprint": request.ek_fingerprint,
                "address": request.address,
            },
        )
        return request


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
    """Accept the host's next enrolment with any new EK, before a planned TPM or board
    replacement (a TPM that already asked has a request: ``accept_tpm``). The new EK still
    waits for ``approve`` when it has no trusted vendor chain."""
    reason = audit.require_reason(reason, "reconnect a host")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = get_host(session, name)
        host.reconnect_allowed = True
        host.new_ek_fingerprint = None
        audit.record(
            session,
            who,
            "host.reconnect",
            now=now,
            host=name,
            reason=reason,
            details={
                "ek_fingerprint": host.ek_fingerprint,
                "accepted_ek_fingerprint": None,  # any EK: a planned replacement
                "status": host.status,
            },
        )
        return host


def remove(ctx: ServerContext, name: str, who: Principal, reason: str) -> None:
    """Remove the host: it becomes a tombstone (kept with its verdicts, alarms and TPM change
    requests, out of the fleet), its agent tokens are revoked, its escrowed keys are kept. The
    name may enrol again as a new host."""
    reason = audit.require_reason(reason, "remove a host")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = get_host(session, name)
        revoked = session.execute(
            update(Token)
            .where(Token.host_id == host.id, Token.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount  # type: ignore[attr-defined]
        kept = len(
            session.scalars(select(StoredVerdict.id).where(StoredVerdict.host_id == host.id)).all()
        )
        details = {
            "host_id": host.id,
            "ek_fingerprint": host.ek_fingerprint,
            "status": host.status,
            "last_verdict": host.last_status,
            "tokens_revoked": revoked,
            "verdicts_kept": kept,
        }
        host.removed_at, host.removed_by, host.removed_reason = now, who.name, reason
        host.reconnect_allowed = False
        audit.record(
            session, who, "host.removed", now=now, host=name, reason=reason, details=details
        )
