"""The schema comes from the shipped Alembic migrations, and the models match them."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from hostseal.server import db
from hostseal.server.models import Base

TABLES = {
    "hosts",
    "enrolments",
    "verdicts",
    "alarms",
    "alarm_events",
    "policies",
    "escrowed_keys",
    "tokens",
    "audit_events",
}


def test_fresh_database_migrates_to_head(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    db.migrate(engine)
    head = ScriptDirectory.from_config(db.alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head
    assert set(inspect(engine).get_table_names()) >= TABLES
    db.migrate(engine)  # up to date: nothing to do
    engine.dispose()


def test_models_match_the_migrations(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cmp.db'}")
    db.migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == [], f"models differ from the migrations; write a migration: {diff}"


def test_migrations_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    from alembic import command

    engine = db.make_engine(f"sqlite:///{tmp_path / 'down.db'}")
    db.migrate(engine)
    command.downgrade(db.alembic_config(engine), "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    db.migrate(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_sqlite_is_durable_and_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("foreign_keys", "journal_mode", "synchronous")
        }
    engine.dispose()
    assert pragmas == {"foreign_keys": 1, "journal_mode": "wal", "synchronous": 2}
