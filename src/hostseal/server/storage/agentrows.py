"""The rows of the attestation path: one read per agent request, one write per verdict.

Every agent request resolves its token to its host with everything attestation needs in one query
(:func:`read_agent_host`); a verdict is stored with the host's new state in one transaction of two
statements (:func:`write_verdict`). The statements are built once and run with bound parameters: the
hot path pays neither statement construction nor ORM column adaptation (table columns, not ORM
attributes), only the execution (docs/scale.md). The values are the service's: what attestation
decided, turned into rows only here.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from hostseal.attest.verdict import VerdictStatus
from hostseal.server.storage.models import Base, Host, HostEventLog, Policy, StoredVerdict, Token


@dataclass(frozen=True, slots=True)
class AgentHost:
    """An agent token's row joined to its host's and its policy's: what attestation needs to
    know of the host. ``last_status``, ``last_messages`` and ``appraisal_key`` are the host's last
    verdict and the key of its last full appraisal (:mod:`hostseal.attest.appraise`)."""

    token_name: str
    host_id: int
    name: str
    status: str
    new_ek_fingerprint: str | None
    ak_public: bytes
    policy_name: str | None
    policy_digest: str | None
    last_status: VerdictStatus | None
    last_messages: list[str]
    appraisal_key: str | None
    last_eventlog_sha256: str | None
    secure_config: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """A verdict as stored, and the host's new state (``host`` holds the changed columns);
    ``eventlog`` = (bytes, SHA-256) replaces the host's stored event log."""

    host_id: int
    nonce: str
    at: datetime
    status: VerdictStatus
    messages: list[str]
    policy_name: str | None
    error: str | None
    host: dict[str, Any]
    eventlog: tuple[bytes, str | None] | None = None


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_tokens, _hosts, _policies = _table(Token), _table(Host), _table(Policy)
_verdicts, _eventlogs = _table(StoredVerdict), _table(HostEventLog)
_AGENT_QUERY = (
    select(
        _tokens.c.name.label("token_name"),
        _hosts.c.id.label("host_id"),
        _hosts.c.name,
        _hosts.c.status,
        _hosts.c.new_ek_fingerprint,
        _hosts.c.ak_public,
        _hosts.c.policy_name,
        _policies.c.digest.label("policy_digest"),
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
        _tokens.c.role == bindparam("role"),
    )
)
_COLUMNS = tuple(_AGENT_QUERY.selected_columns.keys())
assert AgentHost.__slots__ == _COLUMNS, "the agent query's columns are AgentHost's fields"
_JSON_COLUMNS = ("last_messages", "secure_config")
_INSERT_VERDICT = insert(_verdicts)
_UPDATE_HOST = update(_hosts).where(_hosts.c.id == bindparam("host_id_"))
_DELETE_LOG = delete(_eventlogs).where(_eventlogs.c.host_id == bindparam("host_id_"))
_INSERT_LOG = insert(_eventlogs)
_STORED_LOG = select(_eventlogs.c.eventlog).where(_eventlogs.c.host_id == bindparam("host_id_"))
_NONCE_USED = select(_verdicts.c.id).where(_verdicts.c.nonce == bindparam("nonce"))
_HOST_AK = select(_hosts.c.name, _hosts.c.ak_public).where(_hosts.c.id == bindparam("host_id_"))
_POLICY_DOCUMENT = select(_policies.c.document).where(_policies.c.name == bindparam("name"))


@functools.lru_cache(maxsize=8)
def _agent_sql(dialect: Dialect) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
    """_AGENT_QUERY as this dialect's SQL text, its parameters, their order when positional."""
    compiled = _AGENT_QUERY.compile(dialect=dialect)
    params = dict(compiled.construct_params({"token_sha256": "", "role": ""}))
    order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    return str(compiled), params, order


def read_agent_host(
    engine: Engine, token_sha256: str, role: str, reader: Any = None
) -> AgentHost | None:
    """The row of the unrevoked token of ``role`` with this SHA-256, on a DBAPI connection
    (``reader``, kept by the caller, or one from the pool): the one query of every agent
    request, without the engine's per-statement bookkeeping (measured: the larger part of its
    cost). A lost database raises as the engine would (:class:`~sqlalchemy.exc.DBAPIError`)."""
    sql, params, order = _agent_sql(engine.dialect)
    params = {**params, "token_sha256": token_sha256, "role": role}
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
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi_error) from exc
    if row is None:
        return None
    values = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:  # SQLite returns JSON as text; psycopg decodes it already
        if isinstance(values[column], str):
            values[column] = json.loads(values[column])
    if isinstance(values["ak_public"], memoryview):
        values["ak_public"] = bytes(values["ak_public"])
    return AgentHost(**values)


def stored_eventlog(engine: Engine, host_id: int) -> bytes | None:
    """The event log the service holds for the host, if any."""
    with engine.connect() as connection:
        log = connection.scalar(_STORED_LOG, {"host_id_": host_id})
    return bytes(log) if log is not None else None


def policy_document(engine: Engine, name: str) -> str | None:
    """The stored document of the policy ``name``, if there is one."""
    with engine.connect() as connection:
        return connection.scalar(_POLICY_DOCUMENT, {"name": name})


def host_ak(engine: Engine, host_id: int) -> tuple[str, bytes] | None:
    """The name and AK (TPM2B_PUBLIC) of the host ``host_id``, if it exists."""
    with engine.connect() as connection:
        row = connection.execute(_HOST_AK, {"host_id_": host_id}).first()
    return (row.name, bytes(row.ak_public)) if row is not None else None


def nonce_used(engine: Engine, nonce: str) -> bool:
    """True when a stored verdict holds this nonce."""
    with engine.connect() as connection:
        return connection.scalar(_NONCE_USED, {"nonce": nonce}) is not None


def write_verdict(connection: Connection, verdict: VerdictRow) -> bool:
    """Store the verdict and the host's new state; False (nothing for the host changed) when the
    host is gone. Runs in the caller's transaction."""
    connection.execute(
        _INSERT_VERDICT,
        {
            "host_id": verdict.host_id,
            "nonce": verdict.nonce,
            "at": verdict.at,
            "status": verdict.status,
            "messages": verdict.messages,
            "policy_name": verdict.policy_name,
            "error": verdict.error,
        },
    )
    updated = connection.execute(_UPDATE_HOST, {"host_id_": verdict.host_id, **verdict.host})
    if updated.rowcount != 1:
        return False
    if verdict.eventlog is not None:
        eventlog, sha256 = verdict.eventlog
        connection.execute(_DELETE_LOG, {"host_id_": verdict.host_id})
        connection.execute(
            _INSERT_LOG, {"host_id": verdict.host_id, "eventlog": eventlog, "sha256": sha256}
        )
    return True


__all__ = [
    "AgentHost",
    "VerdictRow",
    "host_ak",
    "nonce_used",
    "policy_document",
    "read_agent_host",
    "stored_eventlog",
    "write_verdict",
]
