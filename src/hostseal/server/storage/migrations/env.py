"""Alembic environment: the engine comes from :func:`hostseal.server.storage.engine.alembic_config`.

SQLite alters a table by copying it and dropping the old one (Alembic's batch mode). With foreign
keys enforced, dropping ``hosts`` would delete, by cascade, every row that refers to a host
(tokens, verdicts, alarms, event logs), and copying ``policies`` would clear every host's policy.
So foreign keys are off while SQLite migrates (SQLite allows that only outside a transaction),
checked with ``PRAGMA foreign_key_check`` before the commit, and on again afterwards.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from hostseal.server.storage.models import Base

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("run the migrations with hostseal.server.storage.engine.migrate(engine)")


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows that refer to nothing: {broken[:5]}")


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=sqlite,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
