"""Background work of a server instance: its heartbeat, and periodic jobs claimed in the database.

Every ``tick`` each instance refreshes its heartbeat, then tries each due job. A job is claimed
by locking its row in ``scheduled_jobs`` with ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL):
the instance that gets the lock runs the job in that transaction and moves ``next_run_at`` on;
the others skip it. The hosts a job changes are claimed the same way, batch by batch, so a host
whose attestation is being stored right now (its row locked) is left for the next round instead
of waited for. On SQLite (one instance) the same statements run without the locking clause.

A killed instance's transaction rolls back: the job stays due and another instance runs it.

Jobs:

* ``stale-hosts`` -- every ``staleness_check_every``: hosts that have not attested for
  ``stale_after`` become ``not-reporting`` (audited as ``host.not-reporting``, with the
  ``host-not-reporting`` alarm: :mod:`hostseal.server.reporting`);
* ``prune`` -- every 10 minutes: enrolments expired for a day, instances gone for a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostseal.server import attestation, instances, refusals, reporting
from hostseal.server.context import ServerContext
from hostseal.server.instances import Me
from hostseal.server.settings import ServerSettings
from hostseal.server.storage.models import ScheduledJob

log = logging.getLogger("hostseal.server")

BATCH = 500


def mark_stale(session: Session, now: datetime, settings: ServerSettings) -> list[str]:
    """Hosts that have not attested for ``stale_after`` become ``not-reporting`` with an alarm
    (:func:`hostseal.server.reporting.mark_stale`); their names."""
    return reporting.mark_stale(session, now, settings)


def _stale_hosts(ctx: ServerContext, session: Session, now: datetime) -> str:
    marked = mark_stale(session, now, ctx.settings)
    if marked:
        more = f" and {len(marked) - 20} more" if len(marked) > 20 else ""
        shown = ", ".join(marked[:20]) + more
        log.warning("hosts not reporting: %s", shown)
    return f"{len(marked)} host(s) marked not-reporting"


def _prune(ctx: ServerContext, session: Session, now: datetime) -> str:
    pruned = attestation.prune(session, now)
    forgotten = instances.forget_old(session, now)
    return f"{pruned} enrolment(s) and {forgotten} instance(s) removed"


@dataclass(frozen=True)
class Job:
    name: str
    every: Callable[[ServerContext], timedelta]
    run: Callable[[ServerContext, Session, datetime], str]


JOBS = (
    Job("stale-hosts", lambda ctx: ctx.settings.staleness_check_every, _stale_hosts),
    Job("prune", lambda ctx: timedelta(minutes=10), _prune),
)


def housekeeping(ctx: ServerContext) -> list[str]:
    """Every job's work once, now, whatever the schedule (and this instance's aggregate rows of
    refused evidence); the hosts marked not-reporting."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        marked = mark_stale(session, now, ctx.settings)
        _prune(ctx, session, now)
    refusals.flush(ctx)
    return marked


def _ensure_rows(ctx: ServerContext, now: datetime) -> None:
    with ctx.sessions.begin() as session:
        known = set(session.scalars(select(ScheduledJob.name)))
        for job in JOBS:
            if job.name in known:
                continue
            try:
                with session.begin_nested():  # another instance may insert it at the same time
                    session.add(ScheduledJob(name=job.name, next_run_at=now, last_result=""))
            except IntegrityError:
                pass


def run_due(ctx: ServerContext, me: Me, jobs: tuple[Job, ...] = JOBS) -> list[str]:
    """Run the jobs that are due and that no other instance holds; their names."""
    ran = []
    _ensure_rows(ctx, ctx.clock.now())
    for job in jobs:
        with ctx.sessions.begin() as session:
            now = ctx.clock.now()
            row = session.scalar(
                select(ScheduledJob)
                .where(ScheduledJob.name == job.name, ScheduledJob.next_run_at <= now)
                .with_for_update(skip_locked=True)
            )
            if row is None:
                continue
            result = job.run(ctx, session, now)
            row.last_run_at = now
            row.next_run_at = now + job.every(ctx)
            row.last_instance = me.name
            row.last_result = result
        ran.append(job.name)
    return ran


def start(ctx: ServerContext, port: int) -> Me:
    """Register this process as an instance; warn when alive ones hold another server key."""
    now = ctx.clock.now()
    name = ctx.settings.instance_name or instances.default_name(port)
    key_id = ctx.server_key.key_id
    with ctx.sessions.begin() as session:
        me = instances.register(
            session,
            name=name,
            server_key_id=key_id,
            heartbeat=ctx.settings.heartbeat_every,
            now=now,
        )
    with ctx.sessions() as session:
        others = instances.other_server_keys(session, me, key_id, now)
    if others:
        log.error(
            "this instance's escrow server key is %s but these instances use another: %s. "
            "Keys escrowed through one cannot be read through the other: give every instance "
            "the same server.key (docs/scale.md).",
            key_id,
            "; ".join(others),
        )
    return me


def beat(ctx: ServerContext, me: Me) -> None:
    """Refresh the heartbeat (registering again if the row was removed meanwhile)."""
    with ctx.sessions.begin() as session:
        now = ctx.clock.now()
        if not instances.heartbeat(session, me, now):
            instances.register(
                session,
                name=me.name,
                server_key_id=ctx.server_key.key_id,
                heartbeat=ctx.settings.heartbeat_every,
                now=now,
                me=me,
            )


def stop(ctx: ServerContext, me: Me) -> None:
    with ctx.sessions.begin() as session:
        instances.stopped(session, me, ctx.clock.now())


def tick_interval(ctx: ServerContext) -> float:
    every = min(ctx.settings.heartbeat_every, ctx.settings.staleness_check_every)
    return max(0.2, every.total_seconds())


async def run_forever(ctx: ServerContext, me: Me) -> None:
    """Heartbeat, due jobs and the aggregate audit rows of refused evidence
    (:mod:`hostseal.server.refusals`) every tick, until cancelled; a failed round is logged and
    retried (a database restart costs a round, not the instance)."""
    interval = tick_interval(ctx)
    while True:
        try:
            await asyncio.to_thread(beat, ctx, me)
            await asyncio.to_thread(run_due, ctx, me)
            await asyncio.to_thread(refusals.flush, ctx)  # this instance's own counters
        except Exception as exc:
            log.error("background round failed (retried in %.0f s): %s", interval, exc)
        await asyncio.sleep(interval)


class Background:
    """An instance's background work, started and stopped with the application."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.me: Me | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self.me = await asyncio.to_thread(start, self.ctx, self.ctx.settings.bind_address[1])
        except Exception as exc:  # serve anyway; the requests will say what is wrong
            log.error("could not register this instance in the database, no jobs run: %s", exc)
            return
        self._task = asyncio.create_task(run_forever(self.ctx, self.me))

    async def stop(self) -> None:
        if self._task is None or self.me is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):  # a database that is gone: the heartbeat ages
            await asyncio.to_thread(stop, self.ctx, self.me)
