"""Agent endpoints: enrolment, challenge, evidence, escrow. The host initiates everything."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from hostseal.client.wire import (
    AttestStatus,
    ChallengeOut,
    EnrolFinish,
    EnrolFinished,
    EnrolStart,
    EnrolStarted,
    EscrowIn,
    EscrowOut,
    EvidenceIn,
    SecureConfig,
    VerdictOut,
)
from hostseal.secureconfig.recoverykey import format_recovery_id, parse_recovery_id
from hostseal.server import attestation, audit, enrol, escrow, hostviews, reporting
from hostseal.server.context import ServerContext
from hostseal.server.errors import EvidenceMalformed
from hostseal.server.http.api.deps import Agent, Ctx, b64, b64e, bearer, context_of
from hostseal.server.storage.models import Host
from hostseal.server.tokens import require_agent

router = APIRouter(tags=["agent"])


@router.post("/enrol/start", response_model=EnrolStarted)
def enrol_start(body: EnrolStart, ctx: Ctx) -> EnrolStarted:
    """Send the EK and AK; get a credential only the TPM holding both can activate."""
    certificate = b64(body.ek_certificate, "ek_certificate") if body.ek_certificate else None
    started = enrol.start(
        ctx,
        body.name,
        b64(body.ek_public, "ek_public"),
        certificate,
        b64(body.ak_public, "ak_public"),
        body.enrolment_token,
    )
    return EnrolStarted(
        enrolment_id=started.enrolment_id,
        credential_blob=b64e(started.credential_blob),
        encrypted_secret=b64e(started.encrypted_secret),
    )


@router.post("/enrol/finish", response_model=EnrolFinished)
def enrol_finish(body: EnrolFinish, ctx: Ctx, request: Request) -> EnrolFinished:
    """Return the activated secret; get the agent token. Another TPM under a known host's name
    gets 409 TpmChangeRequested (a request for an operator; the host is not changed)."""
    address = request.client.host if request.client else None
    finished = enrol.finish(ctx, body.enrolment_id, b64(body.secret, "secret"), address)
    return EnrolFinished(
        host=finished.host,
        agent_token=finished.agent_token,
        status=finished.status,  # type: ignore[arg-type]
    )


@router.post("/attest/challenge", response_model=ChallengeOut, dependencies=[Depends(bearer)])
def challenge(request: Request) -> ChallengeOut:
    """A fresh nonce (single use), its ticket, the PCRs to quote, and the SHA-256 of the event
    log the server holds for the host (the agent may then send that digest instead of the log)."""
    return challenge_for(context_of(request), request.headers.get("authorization"))


def challenge_for(
    ctx: ServerContext, authorization: str | None, reader: Any = None
) -> ChallengeOut:
    """The challenge route's work (also answered by :mod:`hostseal.server.http.fastpath`). The
    attestation routes resolve their caller here, not with dependencies: each sync dependency
    costs a thread hop per request."""
    issued = attestation.challenge(ctx, attestation.agent_host(ctx, authorization, reader))
    return ChallengeOut(
        nonce=issued.nonce,
        challenge=issued.challenge,
        expires_at=issued.expires_at,
        bank=issued.bank,
        pcrs=issued.pcrs,
        eventlog_sha256=issued.eventlog_sha256,
    )


def _pcrs(raw: dict[str, dict[str, str]]) -> dict[str, dict[int, bytes]]:
    out: dict[str, dict[int, bytes]] = {}
    for bank, values in raw.items():
        out[bank] = {}
        for index, value in values.items():
            try:
                number = int(index)
                digest = bytes.fromhex(value)
            except ValueError:
                raise EvidenceMalformed(
                    f"PCR {bank}:{index} is not a PCR number with a hex digest.",
                    'Send PCRs as {"sha256": {"0": "<hex>", ...}}.',
                ) from None
            out[bank][number] = digest
    return out


def _secure_config(config: SecureConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    checks = []
    for check in config.recovery_key_checks:
        try:
            recovery_id = format_recovery_id(parse_recovery_id(check.recovery_id))
        except Exception as exc:
            raise EvidenceMalformed(
                f"secure_config: {getattr(exc, 'message', exc)}",
                "Report recovery IDs as GUIDs.",
            ) from exc
        checks.append({"recovery_id": recovery_id, "kcv": check.kcv.lower()})
    return {
        "mode": config.mode.upper(),
        "require_secure_boot": config.require_secure_boot,
        "require_exec_installed_only": config.require_exec_installed_only,
        "recovery_key_checks": checks,
    }


@router.post(
    "/attest/evidence",
    response_model=VerdictOut,
    responses={409: {"description": "nonce unknown, replayed or expired"}, 422: {}},
    dependencies=[Depends(bearer)],
)
def evidence(body: EvidenceIn, request: Request) -> VerdictOut:
    """The quote over the challenge's nonce with the challenge's ticket, the PCR values, the
    event log (or its SHA-256 when the challenge named it), the secure-config state. Answers the
    verdict; 409 for a nonce problem, 422 for evidence that does not verify."""
    return evidence_for(context_of(request), request.headers.get("authorization"), body)


def evidence_for(ctx: ServerContext, authorization: str | None, body: EvidenceIn) -> VerdictOut:
    """The evidence route's work (also answered by :mod:`hostseal.server.http.fastpath`)."""
    host = attestation.agent_host(ctx, authorization)
    verdict = attestation.submit_evidence(ctx, host, submitted(body))
    return VerdictOut(status=verdict.status, messages=verdict.messages)


def submitted(body: EvidenceIn) -> attestation.Evidence:
    """The evidence in the service's terms; 422 naming the field that does not decode."""
    return attestation.Evidence(
        nonce=body.nonce.lower(),
        quote=b64(body.quote, "quote"),
        signature=b64(body.signature, "signature"),
        pcrs=_pcrs(body.pcrs),
        eventlog=b64(body.eventlog, "eventlog") if body.eventlog else None,
        secure_config=_secure_config(body.secure_config),
        challenge=body.challenge,
        eventlog_sha256=body.eventlog_sha256.lower() if body.eventlog_sha256 else None,
    )


@router.get("/attest/status", response_model=AttestStatus)
def own_status(ctx: Ctx, agent: Agent) -> AttestStatus:
    """This host's attestation status, for its agent (and for vTPM key release on the host):
    ``not-reporting`` as soon as the host is late (docs/server.md), whatever its last verdict."""
    host_id, _ = require_agent(agent)
    with ctx.sessions() as session:
        host = session.get(Host, host_id)
        assert host is not None
        shown = hostviews.host_to_dict(session, host)
        shown = reporting.shown(shown, ctx.clock.now(), ctx.settings)
    return AttestStatus(
        host=shown["name"],
        status=shown["status"],
        messages=shown["messages"],
        last_attested_at=shown["last_attested_at"],
    )


@router.post("/escrow", response_model=EscrowOut)
def escrow_keys(body: EscrowIn, ctx: Ctx, agent: Agent) -> EscrowOut:
    """Escrow the host's recovery keys (envelope-encrypted with the server key)."""
    host_id, name = require_agent(agent)
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        host = session.get(Host, host_id)
        assert host is not None
        held, new = escrow.store_keys(
            session,
            ctx.server_key,
            host,
            [(k.recovery_id, k.key) for k in body.keys],
            by=agent.name,
            now=now,
        )
        audit.record(session, agent, "escrow.stored", now=now, host=name, details={"new": new})
    return EscrowOut(escrowed=held)
