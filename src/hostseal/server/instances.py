"""Several ``hostseal server`` instances on one database: who is alive, and scheduled work.

Each instance registers a row in ``instances`` at start, refreshes its heartbeat every
``heartbeat_every`` seconds and marks itself stopped at a clean shutdown. An instance whose
heartbeat is older than three of its own intervals is shown as not alive (it was killed, or lost
the database). Nothing is kept in an instance's memory that another instance needs: enrolments,
tokens and verdicts are rows, and challenges are tickets signed with the shared server key, so an
agent may reach any instance at any step.

``scheduled_jobs`` has one row per periodic job (:mod:`hostseal.server.scheduler`): the
instance that locks a due row (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL) runs the job
in the same transaction and moves ``next_run_at`` on; a killed instance's transaction rolls back
and the job stays due for the others.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from hostseal import __version__
from hostseal.server.storage import engine as db
from hostseal.server.storage.models import Instance, ScheduledJob

DEAD_AFTER_BEATS = 3
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Me:
    """This process as an instance: its row's id and name."""

    id: str
    name: str


def default_name(port: int) -> str:
    return f"{socket.gethostname()}:{port}"


def register(
    session: Session,
    *,
    name: str,
    server_key_id: str,
    heartbeat: timedelta,
    now: datetime,
    me: Me | None = None,
) -> Me:
    """Add this process to the instances; its id is new at every start (``me``: add it again,
    after its row was removed)."""
    me = me or Me(secrets.token_hex(8), name)
    session.add(
        Instance(
            id=me.id,
            name=name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            server_key_id=server_key_id,
            heartbeat_seconds=max(1, int(heartbeat.total_seconds())),
            started_at=now,
            heartbeat_at=now,
        )
    )
    return me


def other_server_keys(session: Session, me: Me, server_key_id: str, now: datetime) -> list[str]:
    """Alive instances whose escrow server key differs from ours (they cannot read our keys)."""
    return [
        f"{row.name} (server key {row.server_key_id})"
        for row in session.scalars(select(Instance).where(Instance.id != me.id))
        if is_alive(row, now) and row.server_key_id != server_key_id
    ]


def heartbeat(session: Session, me: Me, now: datetime) -> bool:
    """Refresh this instance's heartbeat; False when its row is gone (pruned, or restored DB)."""
    result = session.execute(
        update(Instance)
        .where(Instance.id == me.id)
        .values(heartbeat_at=now, stopped_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def stopped(session: Session, me: Me, now: datetime) -> None:
    session.execute(
        update(Instance)
        .where(Instance.id == me.id)
        .values(stopped_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )


def is_alive(row: Instance, now: datetime) -> bool:
    limit = timedelta(seconds=row.heartbeat_seconds * DEAD_AFTER_BEATS)
    return row.stopped_at is None and now - row.heartbeat_at <= limit


def state_of(row: Instance, now: datetime) -> str:
    if row.stopped_at is not None:
        return "stopped"
    return "alive" if is_alive(row, now) else "not-responding"


def forget_old(session: Session, now: datetime) -> int:
    """Delete instances stopped, or silent, for more than a day."""
    limit = now - FORGET_AFTER
    result = session.execute(
        delete(Instance)
        .where(or_(Instance.stopped_at < limit, Instance.heartbeat_at < limit))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def to_dict(row: Instance, now: datetime) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "state": state_of(row, now),
        "hostname": row.hostname,
        "pid": row.pid,
        "version": row.version,
        "server_key_id": row.server_key_id,
        "started_at": row.started_at.isoformat(),
        "heartbeat_at": row.heartbeat_at.isoformat(),
        "heartbeat_seconds": row.heartbeat_seconds,
        "stopped_at": row.stopped_at.isoformat() if row.stopped_at else None,
    }


def list_instances(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Every instance known (alive first, then by name)."""
    rows = session.scalars(select(Instance).order_by(Instance.name, Instance.started_at))
    shown = [to_dict(row, now) for row in rows]
    return sorted(shown, key=lambda i: (i["state"] != "alive", i["name"], i["started_at"]))


def list_jobs(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "name": job.name,
            "next_run_at": job.next_run_at.isoformat(),
            "last_run_at": job.last_run_at.isoformat() if job.last_run_at else None,
            "last_instance": job.last_instance,
            "last_result": job.last_result,
        }
        for job in session.scalars(select(ScheduledJob).order_by(ScheduledJob.name))
    ]


def metrics(session: Session, now: datetime) -> str:
    """Prometheus lines: instances by state, and each instance's heartbeat age."""
    rows = list(session.scalars(select(Instance)))
    counts = {"alive": 0, "not-responding": 0, "stopped": 0}
    for row in rows:
        counts[state_of(row, now)] += 1
    lines = [
        "# HELP hostseal_instances Server instances sharing this database, by state.",
        "# TYPE hostseal_instances gauge",
        *(f'hostseal_instances{{state="{state}"}} {n}' for state, n in counts.items()),
        "# HELP hostseal_instance_heartbeat_age_seconds Seconds since each running instance's "
        "last heartbeat.",
        "# TYPE hostseal_instance_heartbeat_age_seconds gauge",
    ]
    for row in rows:
        if row.stopped_at is None:
            age = max(0.0, (now - row.heartbeat_at).total_seconds())
            name = row.name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(
                f'hostseal_instance_heartbeat_age_seconds{{instance="{name}",id="{row.id}"}} '
                f"{age:.1f}"
            )
    return "\n".join(lines) + "\n"


def read_database(url: str) -> dict[str, Any]:
    """Instances and jobs as ``GET /v1/instances`` shows them, read from the database at
    ``url`` directly (``hostseal server instances``); the database is migrated first."""
    engine = db.make_engine(url, pool_size=1)
    try:
        db.migrate(engine)
        with Session(engine) as session:
            now = datetime.now(UTC)
            return {"instances": list_instances(session, now), "jobs": list_jobs(session)}
    finally:
        engine.dispose()
