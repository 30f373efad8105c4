"""Attestation: challenge -> evidence -> verdict -> alarms, and hosts that stop reporting.

A challenge is a fresh 32-byte nonce for one host with a signed ticket (no database row:
:mod:`hostseal.server.challenges`), expiring after ``nonce_lifetime``. Evidence quotes the nonce
and returns the ticket; the verdict records the nonce under a unique constraint, so a quote is
accepted once whichever instance sees it. Refusals of the nonce (unknown, replayed, expired)
answer 409 and are audited, rate-limited (:mod:`hostseal.server.refusals`), without changing the
host's status (an agent simply asks for a new challenge). Evidence that does not verify
(signature, another host's AK, PCR digest, tampered event log) is a Failed verdict, kept in the
history, and answers 422 with the reason. Which other host's AK signed a quote is answered from
an index of signers (:mod:`hostseal.server.signers`): at most one more signature check.

The hot path is lean on purpose (docs/scale.md): one query resolves the agent's token to its host
with everything attestation needs (:func:`~hostseal.server.storage.agentrows.read_agent_host`);
the challenge touches nothing else; the evidence is appraised (:meth:`Verifier.appraise
<hostseal.server.verify.Verifier.appraise>`: the host's last full appraisal is reused for
evidence of the same boot, event log and policy, so the log is parsed once per boot) and stored
in one transaction of two statements
(:func:`~hostseal.server.storage.agentrows.write_verdict`), plus alarm changes only when the
host's status changes. An agent whose event log the server already holds (the challenge names its
SHA-256) sends the digest instead of the log; the server reads the log only when the judgement
of the host's last appraisal cannot be reused.

The verdict is :class:`hostseal.attest.Verdict` from the appraisal to the answer; it becomes a
row only in :mod:`hostseal.server.storage.agentrows`.

A host without a reference policy is never Passed: its verdict is Warning ("no reference
policy assigned") once its quote verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostseal.attest import QuoteSignatureInvalid, Verdict
from hostseal.attest.appraise import Appraisal, EventLogUnavailable, Judged
from hostseal.errors import HostsealError
from hostseal.server import alarms, challenges, escrow, refusals
from hostseal.server.context import ServerContext
from hostseal.server.enrol import PENDING
from hostseal.server.errors import (
    EventLogTooLarge,
    EventLogUnknown,
    HostNotTrusted,
    NonceExpired,
    NonceReplayed,
    NonceUnknown,
    NotFound,
    Unprocessable,
)
from hostseal.server.reporting import NOT_REPORTING, host_status
from hostseal.server.storage import agentrows
from hostseal.server.storage.agentrows import AgentHost, VerdictRow
from hostseal.server.storage.models import Enrolment, Host
from hostseal.server.tokens import AGENT, Principal, authenticate, require_agent, token_hash
from hostseal.server.verify import DEFAULT_BANK, DEFAULT_PCRS, PolicyFacts

NO_POLICY = (
    "No reference policy is assigned to this host: its quote and event log verified, but its "
    "measurements were not compared with known-good values. Assign one: hostseal policy "
    "capture NAME --host HOST --reason WHY, or hostseal policy assign NAME HOST --reason WHY."
)
NO_POLICY_NO_EVENTLOG = (
    "No reference policy is assigned to this host, and it presented no event log (its boot "
    "left none, or the agent could not read it): only its quote verified; what it booted was "
    "not checked. Give the host an event log (see hostseal tpm info on the host), then assign a "
    "policy: hostseal policy capture NAME --host HOST --reason WHY."
)
POLICY_CACHE_SIZE = 256  # parsed policies kept (a fleet has a few)


class QuoteFromAnotherHost(Unprocessable):
    """The quote verifies with another enrolled host's AK: evidence from another machine."""


@dataclass(frozen=True)
class Evidence:
    """What an agent sends, decoded: the quote over ``nonce`` with its ``challenge`` ticket,
    the PCR values, the event log (or its SHA-256 only), the host's secure-config state."""

    nonce: str
    quote: bytes
    signature: bytes
    pcrs: dict[str, dict[int, bytes]]
    eventlog: bytes | None
    secure_config: dict[str, Any] | None
    challenge: str = ""
    eventlog_sha256: str | None = None


def agent_host(ctx: ServerContext, header: str | None, reader: Any = None) -> AgentHost:
    """The host of the agent token in an ``Authorization: Bearer`` header, in one query (on
    ``reader``, a DBAPI connection kept by the caller, or a pooled one); the precise 401/403 of
    :func:`~hostseal.server.tokens.authenticate` otherwise."""
    scheme, _, value = (header or "").partition(" ")
    host = None
    if scheme.lower() == "bearer" and value.strip():
        host = agentrows.read_agent_host(ctx.engine, token_hash(value.strip()), AGENT, reader)
    if host is None:  # not an agent token: say exactly why
        with ctx.sessions() as session:
            require_agent(authenticate(session, header))
        raise NotFound("This agent's host was removed.", "Enrol the host again.")
    return host


def _principal(host: AgentHost) -> Principal:
    return Principal(host.token_name, AGENT, host.host_id, host.name)


def _may_attest(host: AgentHost) -> None:
    if host.status == PENDING:
        raise HostNotTrusted(
            f"Host {host.name!r} waits for approval: its EK has no trusted certificate chain.",
            f"An operator approves it: hostseal host approve {host.name} --reason ...",
        )


def _policy(ctx: ServerContext, host: AgentHost) -> PolicyFacts | None:
    """The host's policy, parsed once per version (its digest) and kept: the service's one
    cache of parsed policies."""
    if host.policy_name is None or host.policy_digest is None:
        return None
    facts = ctx.policy_cache.get(host.policy_digest)
    if facts is None:
        document = agentrows.policy_document(ctx.engine, host.policy_name)
        if document is None:
            return None
        facts = ctx.verifier.check_policy(host.policy_name, document)
        if len(ctx.policy_cache) >= POLICY_CACHE_SIZE:
            ctx.policy_cache.clear()
        ctx.policy_cache[facts.digest] = facts
    return facts


@dataclass(frozen=True)
class Challenge:
    """A challenge as the agent receives it: the nonce and its ticket, the PCRs to quote, and
    the SHA-256 of the event log the server holds for the host."""

    nonce: str
    challenge: str
    expires_at: str
    bank: str
    pcrs: list[int]
    eventlog_sha256: str | None


def challenge(ctx: ServerContext, host: AgentHost) -> Challenge:
    _may_attest(host)
    policy = _policy(ctx, host)
    issued = challenges.issue(
        ctx.challenge_key, host.host_id, ctx.clock.now(), ctx.settings.nonce_lifetime
    )
    return Challenge(
        nonce=issued.nonce.hex(),
        challenge=issued.ticket,
        expires_at=issued.expires_at.isoformat(),
        bank=policy.bank if policy else DEFAULT_BANK,
        pcrs=list(policy.pcrs if policy else DEFAULT_PCRS),
        eventlog_sha256=host.last_eventlog_sha256,
    )


def _check_nonce(ctx: ServerContext, host: AgentHost, evidence: Evidence, now: datetime) -> None:
    """The ticket is this host's, for this nonce and not expired; a refusal is audited. (That
    no verdict used the nonce is checked where the verdict is stored: its unique nonce.)"""
    try:
        challenges.check(
            ctx.challenge_key,
            evidence.challenge,
            host_id=host.host_id,
            host=host.name,
            nonce=bytes.fromhex(evidence.nonce),
            now=now,
        )
    except (NonceUnknown, NonceExpired) as refusal:
        _audit_refusal(ctx, host, refusal, now)
        raise


def _replayed(nonce: str) -> NonceReplayed:
    return NonceReplayed(
        f"The nonce {nonce[:16]}... was already used: this is a replayed quote, refused.",
        "Each quote needs a fresh challenge: POST /v1/attest/challenge.",
    )


def _audit_refusal(
    ctx: ServerContext, host: AgentHost, refusal: HostsealError, now: datetime
) -> None:
    """Counted always; audited at once when it is the first of its kind for the host in the
    interval, else in one aggregate row (:mod:`hostseal.server.refusals`)."""
    kind = type(refusal).__name__
    refusals.refused(ctx, _principal(host), host.host_id, host.name, kind, refusal.message, now)


@dataclass(frozen=True)
class Prepared:
    """Evidence appraised: its ``verdict`` (the answer), the row that stores it and what the
    write must also do to the host's alarms. :meth:`write` stores it (in a batch:
    :mod:`hostseal.server.storage.writer`), then :func:`settle` answers."""

    host: AgentHost
    nonce: str
    now: datetime
    verdict: Verdict
    error: HostsealError | None
    row: VerdictRow
    failed: bool  # raise the attestation alarm
    cleared: bool  # clear it: the first Passed after another status
    config_changed: bool  # the host's secure configuration changed: re-evaluate escrow's alarm
    back: bool  # the host reports again: clear its not-reporting alarm

    def write(self, session: Session) -> None:
        """The verdict, the host's new state and alarm changes, in ``session``'s transaction."""
        if not agentrows.write_verdict(session.connection(), self.row):
            raise NotFound("This agent's host was removed.", "Enrol the host again.")
        if not (self.failed or self.cleared or self.config_changed or self.back):
            return
        host = session.get(Host, self.host.host_id)
        assert host is not None
        if self.failed:
            message = f"Attestation of host {host.name!r} failed: " + "; ".join(
                self.verdict.messages
            )
            alarms.ensure_raised(session, host, alarms.ATTESTATION, message, self.now)
        elif self.cleared:
            alarms.ensure_cleared(
                session, host, alarms.ATTESTATION, "the host's attestation passed", self.now
            )
        if self.config_changed:
            escrow.reevaluate_alarm(session, host, self.now)
        if self.back:
            alarms.ensure_cleared(
                session, host, alarms.NOT_REPORTING, "the host reported again", self.now
            )


def submit_evidence(ctx: ServerContext, host: AgentHost, evidence: Evidence) -> Verdict:
    """Appraise the evidence, store the verdict, answer it (or raise its error)."""
    prepared = prepare_evidence(ctx, host, evidence)
    try:
        ctx.writer.run(prepared.write)
    except IntegrityError as exc:
        return settle(ctx, prepared, exc)
    return settle(ctx, prepared, None)


def _check_eventlog_size(ctx: ServerContext, evidence: Evidence) -> None:
    """413 for an event log larger than the service stores (``max_eventlog``), before the nonce
    is used or anything is written."""
    limit = ctx.settings.max_eventlog
    if evidence.eventlog is None or len(evidence.eventlog) <= limit:
        return
    shown = f"{limit // 1024 // 1024} MiB" if limit % (1024 * 1024) == 0 else f"{limit // 1024} KiB"
    raise EventLogTooLarge(
        f"The event log is {len(evidence.eventlog)} bytes, more than the {limit} bytes ({shown}) "
        "this server stores per host; nothing of this evidence was stored.",
        "Send the log as the firmware wrote it (/sys/kernel/security/tpm0/"
        "binary_bios_measurements; real logs are 20-100 KiB). If this host's log really is "
        "larger, raise HOSTSEAL_SERVER_MAX_EVENTLOG on the server.",
    )


def _check_eventlog_named(host: AgentHost, evidence: Evidence) -> bool:
    """True when the evidence names the event log by digest instead of sending it (the log the
    server holds for the host: anything else is refused)."""
    if evidence.eventlog is not None or evidence.eventlog_sha256 is None:
        return False
    if evidence.eventlog_sha256 != host.last_eventlog_sha256:
        raise EventLogUnknown(
            f"The evidence names the event log with SHA-256 {evidence.eventlog_sha256[:16]}"
            f"..., and the server holds another log for host {host.name!r} (or none).",
            "Send the event log itself with the evidence (the challenge's eventlog_sha256 "
            "names the log the server holds).",
        )
    return True


def _appraise(
    ctx: ServerContext, host: AgentHost, evidence: Evidence, policy: PolicyFacts | None
) -> Appraisal:
    """The appraisal of the evidence by ``policy``. A log named by its digest is read from
    the database only when it is needed: no policy, or a judgement that cannot be reused."""
    named = _check_eventlog_named(host, evidence)
    eventlog = evidence.eventlog
    if named and policy is None:
        eventlog = agentrows.stored_eventlog(ctx.engine, host.host_id)
    judged = None
    if host.appraisal_key and host.last_status:
        judged = Judged(host.appraisal_key, host.last_status, tuple(host.last_messages))

    def appraise(eventlog: bytes | None) -> Appraisal:
        return ctx.verifier.appraise(
            host.ak_public,
            evidence.quote,
            evidence.signature,
            nonce=bytes.fromhex(evidence.nonce),
            pcrs=evidence.pcrs,
            policy=policy,
            eventlog=eventlog,
            eventlog_sha256=evidence.eventlog_sha256,
            judged=judged,
        )

    try:
        try:
            return appraise(eventlog)
        except EventLogUnavailable:
            if not named or eventlog is not None:
                raise
            return appraise(agentrows.stored_eventlog(ctx.engine, host.host_id))
    except EventLogUnavailable as exc:
        raise EventLogUnknown(exc.message, exc.remedy) from exc


def prepare_evidence(ctx: ServerContext, host: AgentHost, evidence: Evidence) -> Prepared:
    """Everything before the verdict is stored: nonce, appraisal, the verdict."""
    now = ctx.clock.now()
    _may_attest(host)
    _check_eventlog_size(ctx, evidence)
    _check_nonce(ctx, host, evidence, now)
    policy = _policy(ctx, host)
    error: HostsealError | None = None
    appraisal: Appraisal | None = None
    try:
        appraisal = _appraise(ctx, host, evidence, policy)
    except EventLogUnknown:
        raise
    except HostsealError as exc:
        error = _other_signer(ctx, host.host_id, host.name, evidence, exc)
    else:
        ctx.signers.learn(evidence.quote, host.host_id)
    policy_name = policy.name if policy else ""
    if appraisal is None:
        assert error is not None
        verdict = Verdict("Failed", [error.message], [], policy_name)
    elif policy is None:
        without_log = evidence.eventlog is None and evidence.eventlog_sha256 is None
        message = NO_POLICY_NO_EVENTLOG if without_log else NO_POLICY
        verdict = Verdict("Warning", [message], [], policy_name)
    elif appraisal.verdict is not None:
        verdict = appraisal.verdict
    else:  # the judgement of the host's last full appraisal, reused
        verdict = Verdict(appraisal.status, list(appraisal.messages), [], policy_name)
    return _prepared(host, evidence, appraisal, verdict, policy, error, now)


def settle(ctx: ServerContext, prepared: Prepared, stored: BaseException | None) -> Verdict:
    """The answer once the write is done: its verdict, or the evidence's error; a write that
    failed on the verdicts' unique nonce is a replay (audited)."""
    if isinstance(stored, IntegrityError):
        if agentrows.nonce_used(ctx.engine, prepared.nonce):  # the quote was seen before
            refusal = _replayed(prepared.nonce)
            _audit_refusal(ctx, prepared.host, refusal, prepared.now)
            raise refusal from None
        raise NotFound("This agent's host was removed.", "Enrol the host again.") from None
    if stored is not None:
        raise stored
    if prepared.error is not None:
        raise prepared.error
    return prepared.verdict


def _other_signer(
    ctx: ServerContext, host_id: int, name: str, evidence: Evidence, exc: HostsealError
) -> HostsealError:
    """A clearer error when the quote is signed by another enrolled host's AK: the host the
    signer index names for the quote's signer, if any, checked once (never a search)."""
    if not isinstance(exc, QuoteSignatureInvalid):
        return exc
    other_id = ctx.signers.host_of(evidence.quote)
    if other_id is None or other_id == host_id:
        return exc
    other = agentrows.host_ak(ctx.engine, other_id)
    if other is not None:
        other_name, other_ak = other
        if ctx.verifier.signed_by(other_ak, evidence.quote, evidence.signature):
            return QuoteFromAnotherHost(
                f"The quote sent for host {name!r} was signed by the attestation key of host "
                f"{other_name!r}: it is evidence from another machine, refused.",
                f"Check which machine runs the agent enrolled as {name!r}; a copied agent "
                "token is a security incident.",
                {"signer": other_name},
            )
    return exc


def _prepared(
    host: AgentHost,
    evidence: Evidence,
    appraisal: Appraisal | None,
    verdict: Verdict,
    policy: PolicyFacts | None,
    error: HostsealError | None,
    now: datetime,
) -> Prepared:
    """The verdict's row and the host's new state; alarms only when the status changes."""
    new_log: tuple[bytes, str | None] | None = None
    changes: dict[str, Any] = {
        "status": host_status(verdict.status),
        "last_status": verdict.status,
        "last_messages": verdict.messages,
        "last_attested_at": now,
        "appraisal_key": appraisal.key if appraisal is not None else None,
    }
    if appraisal is not None and not appraisal.reused:
        changes["last_pcrs"] = {
            bank: {str(i): v.hex() for i, v in values.items()}
            for bank, values in appraisal.pcrs.items()
        }
        if evidence.eventlog is not None and appraisal.eventlog_sha256 != host.last_eventlog_sha256:
            new_log = (evidence.eventlog, appraisal.eventlog_sha256)
            changes["last_eventlog_sha256"] = appraisal.eventlog_sha256
    # what the host says about its configuration is kept only with a quote that verified
    config_changed = (
        appraisal is not None
        and evidence.secure_config is not None
        and evidence.secure_config != host.secure_config
    )
    if config_changed:
        changes["secure_config"] = evidence.secure_config
    row = VerdictRow(
        host_id=host.host_id,
        nonce=evidence.nonce,
        at=now,
        status=verdict.status,
        messages=verdict.messages,
        policy_name=policy.name if policy else None,
        error=type(error).__name__ if error else None,
        host=changes,
        eventlog=new_log,
    )
    return Prepared(
        host,
        evidence.nonce,
        now,
        verdict,
        error,
        row,
        failed=verdict.status == "Failed",
        cleared=verdict.status == "Passed" and host.last_status != "Passed",
        config_changed=config_changed,
        back=host.status == NOT_REPORTING,
    )


def prune(session: Session, now: datetime, keep: timedelta = timedelta(days=1)) -> int:
    """Delete enrolments that expired more than ``keep`` ago (used or not). (Challenges are
    tickets, not rows: nothing to prune.)"""
    limit = now - keep
    old = list(session.scalars(select(Enrolment).where(Enrolment.expires_at < limit)))
    for row in old:
        session.delete(row)
    return len(old)
