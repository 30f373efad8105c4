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
with everything attestation needs; the challenge touches nothing else; the evidence is appraised
(:meth:`Verifier.appraise`: the host's last full appraisal is reused for evidence of the same
boot, event log and policy, so the log is parsed once per boot) and stored in one transaction of
two statements, plus alarm changes only when the host's status changes. An agent whose event log
the server already holds (the challenge names its SHA-256) sends the digest instead of the log.

A host without a reference policy is never Passed: its verdict is Warning ("no reference
policy assigned") once its quote verifies.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

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
from hostseal.server.reporting import NOT_REPORTING
from hostseal.server.storage.models import (
    Base,
    Enrolment,
    Host,
    HostEventLog,
    Policy,
    Token,
    Verdict,
)
from hostseal.server.tokens import AGENT, Principal, authenticate, require_agent, token_hash
from hostseal.server.verify import DEFAULT_BANK, DEFAULT_PCRS, Appraised, Outcome, PolicyFacts

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
    challenge: str = ""
    eventlog_sha256: str | None = None


@dataclass(frozen=True)
class AgentHost:
    """An agent token resolved to its host, with what attestation needs to know of the host."""

    principal: Principal
    host_id: int
    name: str
    status: str
    new_ek_fingerprint: str | None
    ak_public: bytes
    policy_name: str | None
    policy_digest: str | None
    last_status: str | None
    last_messages: list[Any]
    appraisal_key: str | None
    last_eventlog_sha256: str | None
    secure_config: dict[str, Any] | None


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_tokens, _hosts, _policies = _table(Token), _table(Host), _table(Policy)
_verdicts, _eventlogs = _table(Verdict), _table(HostEventLog)
# Built once, run with bound parameters: the hot path pays neither statement construction nor
# ORM column adaptation (table columns, not ORM attributes), only the execution.
_AGENT_QUERY = (
    select(
        _tokens.c.name,
        _hosts.c.id,
        _hosts.c.name,
        _hosts.c.status,
        _hosts.c.new_ek_fingerprint,
        _hosts.c.ak_public,
        _hosts.c.policy_name,
        _policies.c.digest,
        _hosts.c.last_status,
        _hosts.c.last_messages,
        _hosts.c.appraisal_key,
        _hosts.c.last_eventlog_sha256,
        _hosts.c.secure_config,
    )
    .select_from(
        _tokens.join(_hosts, _hosts.c.id == _tokens.c.host_id).outerjoin(
            _policies, _policies.c.name == _hosts.c.policy_name
        )
    )
    .where(
        _tokens.c.token_sha256 == bindparam("token_sha256"),
        _tokens.c.revoked_at.is_(None),
        _tokens.c.role == AGENT,
    )
)
_INSERT_VERDICT = insert(_verdicts)
_UPDATE_HOST = update(_hosts).where(_hosts.c.id == bindparam("host_id_"))
_DELETE_LOG = delete(_eventlogs).where(_eventlogs.c.host_id == bindparam("host_id_"))
_INSERT_LOG = insert(_eventlogs)
_STORED_LOG = select(_eventlogs.c.eventlog).where(_eventlogs.c.host_id == bindparam("host_id_"))


_JSON_COLUMNS = (9, 12)  # last_messages, secure_config


@functools.lru_cache(maxsize=8)
def _agent_sql(dialect: Dialect) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
    """_AGENT_QUERY as this dialect's SQL text, its parameters, their order when positional."""
    compiled = _AGENT_QUERY.compile(dialect=dialect)
    params = dict(compiled.construct_params({"token_sha256": ""}))
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    return str(compiled), params, order


def _agent_row(engine: Engine, token_sha256: str, reader: Any = None) -> tuple[Any, ...] | None:
    """_AGENT_QUERY on a DBAPI connection (``reader``, or one from the pool): the one query of
    every agent request, without the engine's per-statement bookkeeping (measured: the larger
    part of its cost)."""
    sql, params, order = _agent_sql(engine.dialect)
    params = {**params, "token_sha256": token_sha256}
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        raw = reader if reader is not None else engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql, tuple(params[k] for k in order) if order else params)
                row = cursor.fetchone()
            finally:
                cursor.close()
            raw.rollback()  # end the read (PostgreSQL opens a transaction for it)
        finally:
            if reader is None:
                raw.close()  # back to the pool
    except dbapi_error as exc:  # as the engine would raise it (a lost database: 503)
        raise DBAPIError.instance(sql, params, exc, dbapi_error) from exc
    if row is None:
        return None
    values = list(row)
    for index in _JSON_COLUMNS:  # SQLite returns JSON as text; psycopg decodes it already
        if isinstance(values[index], str):
            values[index] = json.loads(values[index])
    if isinstance(values[5], memoryview):
        values[5] = bytes(values[5])
    return tuple(values)


def agent_host(ctx: ServerContext, header: str | None, reader: Any = None) -> AgentHost:
    """The host of the agent token in an ``Authorization: Bearer`` header, in one query (on
    ``reader``, a DBAPI connection kept by the caller, or a pooled one); the precise 401/403 of
    :func:`~hostseal.server.tokens.authenticate` otherwise."""
    scheme, _, value = (header or "").partition(" ")
    row = None
    if scheme.lower() == "bearer" and value.strip():
        row = _agent_row(ctx.engine, token_hash(value.strip()), reader)
    if row is None:  # not an agent token: say exactly why
        with ctx.sessions() as session:
            require_agent(authenticate(session, header))
        raise NotFound("This agent's host was removed.", "Enrol the host again.")
    (token_name, host_id, name, *rest) = row
    return AgentHost(Principal(token_name, AGENT, host_id, name), host_id, name, *rest)


def _may_attest(host: AgentHost) -> None:
    if host.status == PENDING:
        raise HostNotTrusted(
            f"Host {host.name!r} waits for approval: its EK has no trusted certificate chain.",
            f"An operator approves it: hostseal host approve {host.name} --reason ...",
        )


def policy_of(session: Session, ctx: ServerContext, host: Host) -> PolicyFacts | None:
    if host.policy_name is None:
        return None
    row = session.scalar(select(Policy).where(Policy.name == host.policy_name))
    if row is None:
        return None
    return ctx.verifier.check_policy(row.name, row.document)


def _policy(ctx: ServerContext, host: AgentHost) -> PolicyFacts | None:
    """The host's policy, parsed once per version (its digest) and kept."""
    if host.policy_name is None or host.policy_digest is None:
        return None
    facts = ctx.policy_cache.get(host.policy_digest)
    if facts is None:
        with ctx.engine.connect() as connection:
            document = connection.scalar(
                select(Policy.document).where(Policy.name == host.policy_name)
            )
        if document is None:
            return None
        facts = ctx.verifier.check_policy(host.policy_name, document)
        if len(ctx.policy_cache) >= 256:
            ctx.policy_cache.clear()
        ctx.policy_cache[facts.digest] = facts
    return facts


def challenge(ctx: ServerContext, host: AgentHost) -> dict[str, Any]:
    _may_attest(host)
    policy = _policy(ctx, host)
    issued = challenges.issue(
        ctx.challenge_key, host.host_id, ctx.clock.now(), ctx.settings.nonce_lifetime
    )
    return {
        "nonce": issued.nonce.hex(),
        "challenge": issued.ticket,
        "expires_at": issued.expires_at.isoformat(),
        "bank": policy.bank if policy else DEFAULT_BANK,
        "pcrs": list(policy.pcrs if policy else DEFAULT_PCRS),
        "eventlog_sha256": host.last_eventlog_sha256,
    }


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
    refusals.refused(ctx, host.principal, host.host_id, host.name, kind, refusal.message, now)


def _stored_eventlog(ctx: ServerContext, host_id: int) -> Callable[[], bytes | None]:
    def load() -> bytes | None:
        with ctx.engine.connect() as connection:
            return connection.scalar(_STORED_LOG, {"host_id_": host_id})

    return load


@dataclass(frozen=True)
class Prepared:
    """Evidence appraised, its verdict ready to be stored (``write``) and then answered
    (:func:`settle`)."""

    host: AgentHost
    nonce: str
    now: datetime
    outcome: Outcome
    error: HostsealError | None
    write: Callable[[Session], None]


def submit_evidence(ctx: ServerContext, host: AgentHost, evidence: Evidence) -> Outcome:
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


def prepare_evidence(ctx: ServerContext, host: AgentHost, evidence: Evidence) -> Prepared:
    """Everything before the verdict is stored: nonce, appraisal, the verdict."""
    now = ctx.clock.now()
    _may_attest(host)
    _check_eventlog_size(ctx, evidence)
    _check_nonce(ctx, host, evidence, now)
    eventlog: bytes | Callable[[], bytes | None] | None = evidence.eventlog
    if evidence.eventlog is None and evidence.eventlog_sha256 is not None:
        if evidence.eventlog_sha256 != host.last_eventlog_sha256:
            raise EventLogUnknown(
                f"The evidence names the event log with SHA-256 {evidence.eventlog_sha256[:16]}"
                f"..., and the server holds another log for host {host.name!r} (or none).",
                "Send the event log itself with the evidence (the challenge's eventlog_sha256 "
                "names the log the server holds).",
            )
        eventlog = _stored_eventlog(ctx, host.host_id)
    policy = _policy(ctx, host)
    judged = None
    if host.appraisal_key and host.last_status:
        judged = (host.appraisal_key, host.last_status, list(host.last_messages))
    error: HostsealError | None = None
    appraised: Appraised | None = None
    try:
        appraised = ctx.verifier.appraise(
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
    except EventLogUnknown:
        raise
    except HostsealError as exc:
        error = _other_signer(ctx, host.host_id, host.name, evidence, exc)
    else:
        ctx.signers.learn(evidence.quote, host.host_id)
    if appraised is None:
        assert error is not None
        outcome = Outcome("Failed", [error.message])
    elif policy is None:
        outcome = Outcome("Warning", [NO_POLICY])
    else:
        outcome = appraised.outcome
    write = _verdict_write(ctx, host, evidence, appraised, outcome, policy, error, now)
    return Prepared(host, evidence.nonce, now, outcome, error, write)


def settle(ctx: ServerContext, prepared: Prepared, stored: BaseException | None) -> Outcome:
    """The answer once the write is done: its outcome, or the evidence's error; a write that
    failed on the verdicts' unique nonce is a replay (audited)."""
    if isinstance(stored, IntegrityError):
        with ctx.engine.connect() as connection:
            used = connection.scalar(select(Verdict.id).where(Verdict.nonce == prepared.nonce))
        if used is not None:  # a verdict holds this nonce: the quote was seen before
            refusal = _replayed(prepared.nonce)
            _audit_refusal(ctx, prepared.host, refusal, prepared.now)
            raise refusal from None
        raise NotFound("This agent's host was removed.", "Enrol the host again.") from None
    if stored is not None:
        raise stored
    if prepared.error is not None:
        raise prepared.error
    return prepared.outcome


def _other_signer(
    ctx: ServerContext, host_id: int, name: str, evidence: Evidence, exc: HostsealError
) -> HostsealError:
    """A clearer error when the quote is signed by another enrolled host's AK: the host the
    signer index names for the quote's signer, if any, checked once (never a search)."""
    if type(exc).__name__ != "QuoteSignatureInvalid":
        return exc
    other_id = ctx.signers.host_of(evidence.quote)
    if other_id is None or other_id == host_id:
        return exc
    with ctx.engine.connect() as connection:
        other = connection.execute(
            select(Host.name, Host.ak_public).where(Host.id == other_id)
        ).first()
    if other is not None:
        other_name, other_ak = other
        if ctx.verifier.signed_by(bytes(other_ak), evidence.quote, evidence.signature):
            return QuoteFromAnotherHost(
                f"The quote sent for host {name!r} was signed by the attestation key of host "
                f"{other_name!r}: it is evidence from another machine, refused.",
                f"Check which machine runs the agent enrolled as {name!r}; a copied agent "
                "token is a security incident.",
                {"signer": other_name},
            )
    return exc


def _verdict_write(
    ctx: ServerContext,
    host: AgentHost,
    evidence: Evidence,
    appraised: Appraised | None,
    outcome: Outcome,
    policy: PolicyFacts | None,
    error: HostsealError | None,
    now: datetime,
) -> Callable[[Session], None]:
    """The write of the verdict and the host's new state (one transaction, with others in a
    batch: :mod:`hostseal.server.storage.writer`); alarms only when the status changes."""
    new_log: tuple[bytes, str | None] | None = None
    changes: dict[str, Any] = {
        "status": outcome.status.lower(),
        "last_status": outcome.status,
        "last_messages": outcome.messages,
        "last_attested_at": now,
        "appraisal_key": appraised.key if appraised is not None else None,
    }
    if appraised is not None and not appraised.reused:
        changes["last_pcrs"] = {
            bank: {str(i): v.hex() for i, v in values.items()}
            for bank, values in appraised.pcrs.items()
        }
        if evidence.eventlog is not None and appraised.eventlog_sha256 != host.last_eventlog_sha256:
            new_log = (evidence.eventlog, appraised.eventlog_sha256)
            changes["last_eventlog_sha256"] = appraised.eventlog_sha256
    # what the host says about its configuration is kept only with a quote that verified
    config_changed = (
        appraised is not None
        and evidence.secure_config is not None
        and evidence.secure_config != host.secure_config
    )
    if config_changed:
        changes["secure_config"] = evidence.secure_config
    failed = outcome.status == "Failed"
    cleared = outcome.status == "Passed" and host.last_status != "Passed"
    back = host.status == NOT_REPORTING  # it reports again: its not-reporting alarm clears

    verdict = {
        "host_id": host.host_id,
        "nonce": evidence.nonce,
        "at": now,
        "status": outcome.status,
        "messages": outcome.messages,
        "policy_name": policy.name if policy else None,
        "error": type(error).__name__ if error else None,
    }

    def write(session: Session) -> None:
        connection = session.connection()
        connection.execute(_INSERT_VERDICT, verdict)
        updated = connection.execute(_UPDATE_HOST, {"host_id_": host.host_id, **changes}).rowcount
        if updated != 1:
            raise NotFound("This agent's host was removed.", "Enrol the host again.")
        if new_log is not None:
            connection.execute(_DELETE_LOG, {"host_id_": host.host_id})
            connection.execute(
                _INSERT_LOG, {"host_id": host.host_id, "eventlog": new_log[0], "sha256": new_log[1]}
            )
        if failed or cleared or config_changed:
            _alarms(session, host.host_id, outcome, failed, cleared, config_changed, now)
        if back:
            row = session.get(Host, host.host_id)
            assert row is not None
            alarms.ensure_cleared(
                session, row, alarms.NOT_REPORTING, "the host reported again", now
            )

    return write


def _alarms(
    session: Session,
    host_id: int,
    outcome: Outcome,
    failed: bool,
    cleared: bool,
    config_changed: bool,
    now: datetime,
) -> None:
    row = session.get(Host, host_id)
    assert row is not None
    if failed:
        message = f"Attestation of host {row.name!r} failed: " + "; ".join(outcome.messages)
        alarms.ensure_raised(session, row, alarms.ATTESTATION, message, now)
    elif cleared:
        alarms.ensure_cleared(
            session, row, alarms.ATTESTATION, "the host's attestation passed", now
        )
    if config_changed:
        escrow.reevaluate_alarm(session, row, now)


def prune(session: Session, now: datetime, keep: timedelta = timedelta(days=1)) -> int:
    """Delete enrolments that expired more than ``keep`` ago (used or not). (Challenges are
    tickets, not rows: nothing to prune.)"""
    limit = now - keep
    old = list(session.scalars(select(Enrolment).where(Enrolment.expires_at < limit)))
    for row in old:
        session.delete(row)
    return len(old)
