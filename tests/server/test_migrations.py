"""The schema comes from the shipped Alembic migrations, and the models match them."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from hostseal.server.storage import engine as db
from hostseal.server.storage.models import Base

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
    "tpm_change_requests",
    "enrolment_tokens",
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


def test_0003_keeps_policies_and_event_logs_and_goes_back(tmp_path: Path) -> None:
    """Upgrading a database with data: each policy gets its digest, each host's event log moves
    to host_eventlogs with its SHA-256, the challenges table goes; a downgrade brings them back."""
    import hashlib

    from alembic import command
    from sqlalchemy import text

    engine = db.make_engine(f"sqlite:///{tmp_path / 'data.db'}")
    db.migrate(engine, "0002")
    log = b"\x03\x00\x00\x00" + bytes(range(256)) * 40
    document = '{"format": "hostseal-reference-policy", "version": 1, "name": "gold"}\n'
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO policies (name, document, updated_at, updated_by) "
                "VALUES ('gold', :document, '2026-11-23 10:00:00', 'test')"
            ),
            {"document": document},
        )
        for name, eventlog in (("with-log", log), ("without-log", None)):
            connection.execute(
                text(
                    "INSERT INTO hosts (name, status, enrolled_at, ek_public, ek_fingerprint, "
                    "ek_trusted, ak_public, ak_name, reconnect_allowed, last_messages, "
                    "last_eventlog, policy_name) VALUES (:name, 'passed', '2026-11-23 10:00:00', "
                    "x'01', 'ff', 1, x'02', '00', 0, '[]', :log, 'gold')"
                ),
                {"name": name, "log": eventlog},
            )
        connection.execute(
            text(
                "INSERT INTO tokens (name, role, token_sha256, host_id, created_at) "
                "SELECT 'agent:' || name, 'agent', name, id, '2026-11-23 10:00:00' FROM hosts"
            )
        )
    db.migrate(engine)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT digest FROM policies")) == (
            hashlib.sha256(document.encode()).hexdigest()
        )
        rows = dict(connection.execute(text("SELECT name, last_eventlog_sha256 FROM hosts")).all())
        assert rows == {"with-log": hashlib.sha256(log).hexdigest(), "without-log": None}
        stored = connection.execute(text("SELECT sha256, eventlog FROM host_eventlogs")).all()
        assert stored == [(hashlib.sha256(log).hexdigest(), log)]
        # nothing that refers to a host or a policy was lost when their tables were rebuilt
        assert connection.scalar(text("SELECT count(*) FROM tokens")) == 2
        assert set(connection.scalars(text("SELECT policy_name FROM hosts"))) == {"gold"}
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert "challenges" not in inspect(engine).get_table_names()

    command.downgrade(db.alembic_config(engine), "0002")
    with engine.connect() as connection:
        back = dict(connection.execute(text("SELECT name, last_eventlog FROM hosts")).all())
    assert back == {"with-log": log, "without-log": None}
    assert "challenges" in inspect(engine).get_table_names()
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_0004_tombstones_and_tpm_change_requests_and_back(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0004: a host an earlier version flipped to tpm-changed is enrolled again with its own
    TPM; a removed host (tombstone) and a live host may share a name, two live hosts may not;
    a downgrade deletes the tombstones with what refers to them and restores the unique name."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'tomb.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("migrate_0004")
    engine = db.make_engine(url)
    db.migrate(engine, "0003")
    insert_host = (
        "INSERT INTO hosts (name, status, enrolled_at, ek_public, ek_fingerprint, ek_trusted, "
        "ak_public, ak_name, new_ek_fingerprint, reconnect_allowed, last_messages) VALUES "
        "(:name, :status, '2026-11-23 10:00:00', :ek, 'ff', true, :ak, '00', :new, false, '[]')"
    )
    with engine.begin() as connection:
        connection.execute(
            text(insert_host),
            {"name": "esx1", "status": "tpm-changed", "ek": b"\x01", "ak": b"\x02", "new": "ee"},
        )
        connection.execute(
            text(
                "INSERT INTO tokens (name, role, token_sha256, host_id, created_at) "
                "SELECT 'agent:esx1', 'agent', 'aa', id, '2026-11-23 10:00:00' FROM hosts"
            )
        )
        connection.execute(
            text(
                "INSERT INTO verdicts (host_id, at, status, messages) "
                "SELECT id, '2026-11-23 10:00:00', 'Passed', '[]' FROM hosts"
            )
        )
    db.migrate(engine)
    live = {"ek": b"\x01", "ak": b"\x02", "new": None}
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT status, new_ek_fingerprint, removed_at FROM hosts")
        ).one()
        assert tuple(row) == ("enrolled", None, None)
        connection.execute(text("UPDATE hosts SET removed_at = '2026-11-24 10:00:00'"))
        connection.execute(text(insert_host), {"name": "esx1", "status": "enrolled", **live})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(insert_host), {"name": "esx1", "status": "enrolled", **live})
    assert "tpm_change_requests" in inspect(engine).get_table_names()

    command.downgrade(db.alembic_config(engine), "0003")
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM hosts")) == 1
        assert connection.scalar(text("SELECT count(*) FROM verdicts")) == 0
        assert connection.scalar(text("SELECT count(*) FROM tokens")) == 0
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(insert_host), {"name": "esx1", "status": "enrolled", **live})
    assert "tpm_change_requests" not in inspect(engine).get_table_names()
    db.migrate(engine)
    engine.dispose()
