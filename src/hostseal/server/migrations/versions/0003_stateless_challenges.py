"""Challenges without rows (signed tickets), a unique nonce per verdict, and what a reused
appraisal needs: the host's event log digest and appraisal key, each policy's digest.

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

    hosts = sa.table(
        "hosts", sa.column("last_eventlog", sa.LargeBinary),
        sa.column("last_eventlog_sha256", sa.String),
    )  # fmt: skip
    for (log,) in connection.execute(
        sa.select(hosts.c.last_eventlog).where(hosts.c.last_eventlog.is_not(None)).distinct()
    ):
        connection.execute(
            hosts.update()
            .where(hosts.c.last_eventlog == log)
            .values(last_eventlog_sha256=hashlib.sha256(log).hexdigest())
        )


def downgrade() -> None:
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
