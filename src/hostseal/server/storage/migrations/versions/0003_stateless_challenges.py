"""Challenges without rows (signed tickets), a unique nonce per verdict, what a reused
appraisal needs (the host's event log digest and appraisal key, each policy's digest), and the
hosts' event logs in their own table.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_challenges_host_id"))
    op.drop_table("challenges")

    with op.batch_alter_table("verdicts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nonce", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_verdicts_nonce"), ["nonce"])

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_eventlog_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("appraisal_key", sa.String(length=64), nullable=True))

    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    policies = sa.table(
        "policies", sa.column("id", sa.Integer), sa.column("document", sa.Text),
        sa.column("digest", sa.String),
    )  # fmt: skip
    for row_id, document in connection.execute(sa.select(policies.c.id, policies.c.document)):
        digest = hashlib.sha256(document.encode()).hexdigest()
        connection.execute(policies.update().where(policies.c.id == row_id).values(digest=digest))
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.alter_column("digest", existing_type=sa.String(length=64), nullable=False)

    # the log in its own table: a host row is rewritten at every attestation, the log only
    # when the host reboots
    op.create_table(
        "host_eventlogs",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("eventlog", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_host_eventlogs_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_id", name=op.f("pk_host_eventlogs")),
    )  # fmt: skip
    hosts = sa.table(
        "hosts", sa.column("id", sa.Integer), sa.column("last_eventlog", sa.LargeBinary),
        sa.column("last_eventlog_sha256", sa.String),
    )  # fmt: skip
    logs = sa.table(
        "host_eventlogs", sa.column("host_id", sa.Integer), sa.column("sha256", sa.String),
        sa.column("eventlog", sa.LargeBinary),
    )  # fmt: skip
    rows = connection.execute(
        sa.select(hosts.c.id, hosts.c.last_eventlog).where(hosts.c.last_eventlog.is_not(None))
    ).all()
    for host_id, log in rows:
        digest = hashlib.sha256(log).hexdigest()
        connection.execute(logs.insert().values(host_id=host_id, sha256=digest, eventlog=log))
        connection.execute(
            hosts.update().where(hosts.c.id == host_id).values(last_eventlog_sha256=digest)
        )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("last_eventlog")


def downgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_eventlog", sa.LargeBinary(), nullable=True))
    connection = op.get_bind()
    hosts = sa.table(
        "hosts", sa.column("id", sa.Integer), sa.column("last_eventlog", sa.LargeBinary)
    )
    logs = sa.table(
        "host_eventlogs", sa.column("host_id", sa.Integer), sa.column("eventlog", sa.LargeBinary)
    )
    for host_id, log in connection.execute(sa.select(logs.c.host_id, logs.c.eventlog)).all():
        connection.execute(hosts.update().where(hosts.c.id == host_id).values(last_eventlog=log))
    op.drop_table("host_eventlogs")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_column("digest")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("appraisal_key")
        batch_op.drop_column("last_eventlog_sha256")
    with op.batch_alter_table("verdicts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_verdicts_nonce"), type_="unique")
        batch_op.drop_column("nonce")
    op.create_table(
        "challenges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_challenges_host_id_hosts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_challenges")),
        sa.UniqueConstraint("nonce", name=op.f("uq_challenges_nonce")),
    )
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_challenges_host_id"), ["host_id"], unique=False)
