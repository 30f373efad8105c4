"""Engine, sessions and migrations.

The schema is created and upgraded by the Alembic migrations shipped in
:mod:`hostseal.server.storage.migrations`, run programmatically at start (:func:`migrate`).
SQLite runs in WAL mode with ``synchronous=FULL`` and foreign keys on: a committed transaction
survives a crash or a power loss.

PostgreSQL (``postgresql+psycopg://``, psycopg 3) is for several instances on one database
(docs/scale.md): connections are checked before use (``pool_pre_ping``), so a restarted database
costs the requests that were in flight, not the instance; instances starting together migrate
one after the other (a PostgreSQL advisory lock around the migrations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hostseal.errors import HostsealError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x686F737473656131  # pg_advisory_lock key: "hostsea1"


class DatabaseUnavailable(HostsealError):
    """The database cannot be opened or migrated."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """An engine for ``url``; SQLite gets the pragmas above and can be used from any thread;
    other databases keep ``pool_size`` connections (and as many again under load)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=16,  # the request threads share these (each new one runs the pragmas)
            max_overflow=48,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=30,
        pool_recycle=1800,
    )


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def alembic_config(engine: Engine) -> Any:
    """An Alembic ``Config`` built in code (no alembic.ini), bound to ``engine``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (the newest by default); a no-op when up to date."""
    from alembic import command

    try:
        if is_postgresql(engine):
            with engine.connect() as lock:  # other instances wait here while one migrates
                lock.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
                try:
                    command.upgrade(alembic_config(engine), revision)
                finally:
                    lock.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                    lock.commit()
        else:
            command.upgrade(alembic_config(engine), revision)
    except HostsealError:
        raise
    except Exception as exc:
        raise DatabaseUnavailable(
            f"The database {engine.url.render_as_string(hide_password=True)} could not be "
            f"migrated: {exc}",
            "Check that the database is reachable and writable, and that it was not written by "
            "a newer hostseal.",
        ) from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
