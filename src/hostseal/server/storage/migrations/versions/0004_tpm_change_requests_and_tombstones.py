"""Enrolment tokens (``HOSTSEAL_SERVER_ENROLMENT=token``); TPM change requests beside a host
(an unauthenticated enrolment of another TPM under a known name no longer changes the host); and
removed hosts kept as tombstones: a host name is unique among the hosts that are not removed (a
partial unique index), so the name can enrol again.

Hosts an earlier version flipped to ``tpm-changed`` (an unauthenticated enrolment could do that)
go back to ``enrolled`` with their registered TPM: their agent token was never revoked, so their
agent attests again; the other TPM, if it is genuine, asks again and becomes a request.

A downgrade deletes the tombstones with their verdicts, alarms and tokens (revision 0003 could
not hold two hosts with one name) and the TPM change requests.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_LIVE = sa.text("removed_at IS NULL")
# what a downgrade deletes: the tombstones and what refers to them, children first (SQLite
# migrates with foreign keys off, so nothing cascades)
_DELETE_TOMBSTONES = (
    "DELETE FROM alarm_events WHERE alarm_id IN (SELECT id FROM alarms WHERE host_id IN "
    "(SELECT id FROM hosts WHERE removed_at IS NOT NULL))",
    "DELETE FROM alarms WHERE host_id IN (SELECT id FROM hosts WHERE removed_at IS NOT NULL)",
    "DELETE FROM verdicts WHERE host_id IN (SELECT id FROM hosts WHERE removed_at IS NOT NULL)",
    "DELETE FROM tokens WHERE host_id IN (SELECT id FROM hosts WHERE removed_at IS NOT NULL)",
    "DELETE FROM host_eventlogs WHERE host_id IN "
    "(SELECT id FROM hosts WHERE removed_at IS NOT NULL)",
    "DELETE FROM tpm_change_requests WHERE host_id IN "
    "(SELECT id FROM hosts WHERE removed_at IS NOT NULL)",
    "DELETE FROM hosts WHERE removed_at IS NOT NULL",
)


def upgrade() -> None:
    op.create_table(
        "enrolment_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("host_name", sa.String(length=255), nullable=True),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_enrolment_tokens_token_sha256")),
    )
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_enrolments_token_id_enrolment_tokens"),
            "enrolment_tokens",
            ["token_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "tpm_change_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("old_ek_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("ek_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("ek_public", sa.LargeBinary(), nullable=False),
        sa.Column("ek_certificate", sa.LargeBinary(), nullable=True),
        sa.Column("ek_trusted", sa.Boolean(), nullable=False),
        sa.Column("ek_vendor", sa.String(length=64), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_tpm_change_requests_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tpm_change_requests")),
    )  # fmt: skip
    with op.batch_alter_table("tpm_change_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tpm_change_requests_host_id"), ["host_id"], unique=False
        )

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("removed_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("removed_reason", sa.Text(), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_hosts_name"), type_="unique")
        batch_op.create_index(batch_op.f("ix_hosts_name"), ["name"], unique=False)
    op.execute(
        "UPDATE hosts SET status = 'enrolled', new_ek_fingerprint = NULL, "
        "reconnect_allowed = false WHERE status = 'tpm-changed'"
    )
    op.create_index(
        "uq_hosts_live_name",
        "hosts",
        ["name"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_hosts_live_name", table_name="hosts")
    for statement in _DELETE_TOMBSTONES:
        op.execute(statement)
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_name"))
        batch_op.create_unique_constraint(batch_op.f("uq_hosts_name"), ["name"])
        batch_op.drop_column("removed_reason")
        batch_op.drop_column("removed_by")
        batch_op.drop_column("removed_at")
    with op.batch_alter_table("tpm_change_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tpm_change_requests_host_id"))
    op.drop_table("tpm_change_requests")
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_enrolments_token_id_enrolment_tokens"), type_="foreignkey"
        )
        batch_op.drop_column("token_id")
    op.drop_table("enrolment_tokens")
