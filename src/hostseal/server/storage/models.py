"""The service's database: SQLAlchemy 2.0 typed models.

Every schema change comes with an Alembic migration in
:mod:`hostseal.server.storage.migrations`; a test checks that autogenerate finds no difference
between these models and the migrations. Only portable SQL types are used (no SQLite-only
features), so PostgreSQL works as well.

Timestamps are timezone-aware UTC in Python (:class:`UtcDateTime`), whatever the database keeps.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Host(Base):
    """A host known to the service, with its enrolled TPM identity and its latest state."""

    __tablename__ = "hosts"
    # A removed host stays as a tombstone (its verdicts and alarms are history); a name is
    # unique among the hosts that are not removed, so the name can enrol again as a new host.
    __table_args__ = (
        Index(
            "uq_hosts_live_name",
            "name",
            unique=True,
            sqlite_where=text("removed_at IS NULL"),
            postgresql_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32))
    enrolled_at: Mapped[datetime]
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ek_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    ek_certificate: Mapped[bytes | None] = mapped_column(LargeBinary)
    ek_trusted: Mapped[bool] = mapped_column(Boolean)
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)
    ak_name: Mapped[str] = mapped_column(String(140))
    new_ek_fingerprint: Mapped[str | None] = mapped_column(String(64))
    reconnect_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_name: Mapped[str | None] = mapped_column(
        String(255), ForeignKey("policies.name", ondelete="SET NULL")
    )
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_messages: Mapped[list[Any]] = mapped_column(default=list)
    last_attested_at: Mapped[datetime | None]
    last_eventlog_sha256: Mapped[str | None] = mapped_column(String(64))
    last_pcrs: Mapped[dict[str, Any] | None]
    # hostseal.attest.appraise.appraisal_key of the last full appraisal, whose outcome is
    # last_status / last_messages; None when the last verdict was not a full appraisal.
    appraisal_key: Mapped[str | None] = mapped_column(String(64))
    secure_config: Mapped[dict[str, Any] | None]
    # set when an operator removed the host (hostseal.server.enrol.remove): a tombstone
    removed_at: Mapped[datetime | None]
    removed_by: Mapped[str | None] = mapped_column(String(255))
    removed_reason: Mapped[str | None] = mapped_column(Text)

    verdicts: Mapped[list[StoredVerdict]] = relationship(
        back_populates="host", cascade="all, delete-orphan", passive_deletes=True
    )
    eventlog_row: Mapped[HostEventLog | None] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def last_eventlog(self) -> bytes | None:
        """The event log of the last verified boot (its own table: a host row is rewritten at
        every attestation, the log only when the host reboots)."""
        return self.eventlog_row.eventlog if self.eventlog_row is not None else None

    @last_eventlog.setter
    def last_eventlog(self, value: bytes | None) -> None:
        if value is None:
            self.eventlog_row = None
            self.last_eventlog_sha256 = None
        else:
            digest = hashlib.sha256(value).hexdigest()
            self.eventlog_row = HostEventLog(eventlog=value, sha256=digest)
            self.last_eventlog_sha256 = digest


class HostEventLog(Base):
    """A host's last verified event log (``Host.last_eventlog``), whose SHA-256 is also
    ``hosts.last_eventlog_sha256``."""

    __tablename__ = "host_eventlogs"

    host_id: Mapped[int] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(String(64))
    eventlog: Mapped[bytes] = mapped_column(LargeBinary)


class Enrolment(Base):
    """A pending enrolment: the MakeCredential secret (hashed), single use, expiring."""

    __tablename__ = "enrolments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(255))
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ek_certificate: Mapped[bytes | None] = mapped_column(LargeBinary)
    ek_trusted: Mapped[bool] = mapped_column(Boolean)
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)
    ak_name: Mapped[str] = mapped_column(String(140))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # the enrolment token it was started with (HOSTSEAL_SERVER_ENROLMENT=token); used at finish
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrolment_tokens.id", ondelete="SET NULL")
    )


class EnrolmentToken(Base):
    """A one-time (or N-times) enrolment token, stored as its SHA-256: for one host name, or for
    a batch of new hosts (``host_name`` None); it expires."""

    __tablename__ = "enrolment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    host_name: Mapped[str | None] = mapped_column(String(255))
    uses_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(255))


class TpmChangeRequest(Base):
    """Another TPM that proved possession of its EK under a known host's name: kept beside the
    host until an operator accepts or rejects it; the host itself is not changed by it."""

    __tablename__ = "tpm_change_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    old_ek_fingerprint: Mapped[str] = mapped_column(String(64))
    ek_fingerprint: Mapped[str] = mapped_column(String(64))
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ek_certificate: Mapped[bytes | None] = mapped_column(LargeBinary)
    ek_trusted: Mapped[bool] = mapped_column(Boolean)
    ek_vendor: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # open, accepted, rejected
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")


class StoredVerdict(Base):
    """One attestation result, kept as history. ``nonce`` (the challenge's, hex) is unique: a
    quote is accepted once (hostseal.server.challenges)."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nonce: Mapped[str | None] = mapped_column(String(64), unique=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    messages: Mapped[list[Any]]
    policy_name: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(String(64))

    host: Mapped[Host] = relationship(back_populates="verdicts")


class Alarm(Base):
    """An alarm on a host; a cleared alarm stays as history and a new one is raised next time."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    host: Mapped[Host] = relationship()
    events: Mapped[list[AlarmEvent]] = relationship(
        back_populates="alarm",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="AlarmEvent.id",
    )


class AlarmEvent(Base):
    """raised / acknowledged / cleared / reset, by whom, with a comment."""

    __tablename__ = "alarm_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(16))
    who: Mapped[str] = mapped_column(String(255))
    comment: Mapped[str] = mapped_column(Text, default="")

    alarm: Mapped[Alarm] = relationship(back_populates="events")


class Policy(Base):
    """A reference policy, stored as the JSON document :mod:`hostseal.attest.policy` reads."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    document: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of document, hex
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(255))


class EscrowedKey(Base):
    """A recovery key, envelope-encrypted: AES-256-GCM under a random data key, which is wrapped
    by the server key (a file outside the database). Kept when the host is removed."""

    __tablename__ = "escrowed_keys"
    __table_args__ = (UniqueConstraint("host_name", "recovery_id", "kcv"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_name: Mapped[str] = mapped_column(String(255), index=True)
    recovery_id: Mapped[str] = mapped_column(String(38))
    kcv: Mapped[str] = mapped_column(String(32))
    server_key_id: Mapped[str] = mapped_column(String(16))
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    escrowed_at: Mapped[datetime]
    escrowed_by: Mapped[str] = mapped_column(String(255))


class Token(Base):
    """An API token, stored as its SHA-256. Agent tokens are bound to one host."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    host_id: Mapped[int | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Who did what, when, to which host, and why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    who: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Instance(Base):
    """A ``hostseal server`` process that uses this database."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    server_key_id: Mapped[str] = mapped_column(String(16))
    heartbeat_seconds: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]


class ScheduledJob(Base):
    """A periodic job, run by whichever instance claims it when it is due."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]
    last_instance: Mapped[str | None] = mapped_column(String(255))
    last_result: Mapped[str] = mapped_column(Text, default="")
