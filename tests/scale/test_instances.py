"""Several ``hostseal server`` instances on one PostgreSQL, over real TLS on 127.0.0.1: liveness,
shared challenges, scheduled jobs claimed once, and a bounded load with faults (an instance
killed and started again, PostgreSQL restarted) that loses and duplicates no verdict."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from _service import hostseal
from hostseal.server.storage.models import Host, StoredVerdict
from scale.fleet import Fleet, make_hosts, open_loop
from scale.service import Service, prepare

HEARTBEAT = {"HOSTSEAL_SERVER_HEARTBEAT": "1"}
_names = itertools.count()


@pytest.fixture
def database(postgres: Any) -> Iterator[str]:
    name = f"hostseal_scale_{next(_names)}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


@pytest.fixture
def two(tmp_path: Path, database: str) -> Iterator[Service]:
    service = Service(tmp_path / "server", database, 2, HEARTBEAT).start()
    yield service
    service.close()
    assert "Traceback" not in service.logs(), service.logs()


def _instances(service: Service, number: int = 0) -> dict[str, Any]:
    with service.http(number) as client:
        response = client.get("/v1/instances")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _states(service: Service, number: int = 0) -> list[tuple[str, str]]:
    return sorted((i["name"], i["state"]) for i in _instances(service, number)["instances"])


def _wait(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_instances_are_visible_share_challenges_and_run_each_job_once(
    two: Service, database: str
) -> None:
    assert _states(two) == [("instance1", "alive"), ("instance2", "alive")]
    hosts = make_hosts(4)
    prepare(two, hosts, database)

    async def alternate() -> list[str]:  # challenge from one instance, evidence to the other
        fleet = Fleet(two.urls, two.ca)
        verdicts = [await fleet.attest(h, n, alternate=True) for n, h in enumerate(hosts)]
        await fleet.close()
        return verdicts

    assert asyncio.run(alternate()) == ["Passed"] * 4
    jobs = {j["name"]: j for j in _instances(two, 1)["jobs"]}
    assert set(jobs) == {"stale-hosts", "prune"}
    assert jobs["prune"]["last_instance"] in ("instance1", "instance2")
    assert "removed" in jobs["prune"]["last_result"]
    listed = hostseal("server", "instances", "--db", database, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {i["name"] for i in json.loads(listed.stdout)["instances"]} == {"instance1", "instance2"}
    with two.http(0) as client:
        metrics = client.get("/metrics").text
    assert 'hostseal_instances{state="alive"} 2' in metrics

    two.instances[1].kill()
    _wait(lambda: ("instance2", "not-responding") in _states(two))
    two.instances[1].start()  # a new process: a new row, the old one stays not-responding
    _wait(lambda: _states(two).count(("instance2", "alive")) == 1)
    two.instances[0].stop()
    assert ("instance1", "stopped") in _states(two, 1)


def test_a_stale_host_is_marked_once_whichever_instances_run(tmp_path: Path, database: str) -> None:
    env = {**HEARTBEAT, "HOSTSEAL_SERVER_STALE_AFTER": "2", "HOSTSEAL_SERVER_STALE_CHECK": "1"}
    service = Service(tmp_path / "server", database, 2, env)
    hosts = make_hosts(3)
    try:
        service.start()
        prepare(service, hosts, database)
        engine = create_engine(database)

        def marked() -> int:
            with engine.connect() as connection:
                return int(
                    connection.scalar(
                        select(func.count()).select_from(Host).where(Host.status == "not-reporting")
                    )
                    or 0
                )

        _wait(lambda: marked() == 3, timeout=30)
        with engine.connect() as connection:
            audited = connection.exec_driver_sql(
                "SELECT host, count(*) FROM audit_events WHERE action = 'host.not-reporting' "
                "GROUP BY host"
            ).all()
            alarmed = connection.exec_driver_sql(
                "SELECT h.name, count(*) FROM alarms a JOIN hosts h ON h.id = a.host_id "
                "WHERE a.kind = 'host-not-reporting' GROUP BY h.name"
            ).all()
        engine.dispose()
        assert sorted(audited) == sorted((h.name, 1) for h in hosts)  # each marked exactly once
        assert sorted(alarmed) == sorted((h.name, 1) for h in hosts)  # one alarm each
    finally:
        service.close()


def test_no_verdict_lost_or_duplicated_when_an_instance_dies_and_postgres_restarts(
    two: Service, database: str, postgres: Any
) -> None:
    hosts = make_hosts(30)
    prepare(two, hosts, database)
    engine = create_engine(database, pool_pre_ping=True)
    with engine.connect() as connection:
        first = int(connection.scalar(select(func.max(StoredVerdict.id))) or 0)

    async def load() -> Fleet:
        fleet = Fleet(two.urls, two.ca)

        async def faults() -> None:
            await asyncio.sleep(3)
            await asyncio.to_thread(two.instances[1].kill)  # SIGKILL, mid-load
            await asyncio.sleep(3)
            await asyncio.to_thread(two.instances[1].start)
            await asyncio.sleep(2)
            await asyncio.to_thread(postgres.restart)  # every connection dropped

        fault = asyncio.create_task(faults())
        await open_loop(fleet, hosts, rate=15, duration=16)
        await fault
        await fleet.close()
        return fleet

    fleet = asyncio.run(load())
    out = fleet.outcome
    print(
        f"{out.accepted} accepted, {out.retries} retries, {out.ambiguous} unanswered evidence, "
        f"p50 {out.percentile(50) * 1000:.0f} ms, p99 {out.percentile(99) * 1000:.0f} ms: "
        f"{out.errors}"
    )
    assert out.failed == 0, out.errors
    assert out.retries > 0, "no fault was seen: the test proves nothing"
    with engine.connect() as connection:
        rows = connection.execute(
            select(Host.name, StoredVerdict.status)
            .join(StoredVerdict)
            .where(StoredVerdict.id > first)
        ).all()
    stored: dict[str, int] = {}
    for name, status in rows:
        assert status == "Passed"
        stored[name] = stored.get(name, 0) + 1
    for host in hosts:
        new = stored.get(host.name, 0)
        accepted = out.per_host.get(host.name, 0)
        unanswered = out.ambiguous_per_host.get(host.name, 0)
        # every accepted verdict is stored; an extra one only where an answer was lost
        assert accepted <= new <= accepted + unanswered, (host.name, accepted, new, unanswered)
    assert sum(out.per_host.values()) == out.accepted > 150
    # exactly, by nonce: every accepted verdict stored once, nothing stored that was not sent
    # (a verdict's nonce is unique: a duplicate cannot be stored)
    with engine.connect() as connection:
        nonces = list(
            connection.scalars(select(StoredVerdict.nonce).where(StoredVerdict.id > first))
        )
    engine.dispose()
    assert len(nonces) == len(set(nonces))
    assert out.accepted_nonces <= set(nonces)
    assert set(nonces) - out.accepted_nonces <= out.unanswered_nonces


def test_sqlite_instance_killed_mid_load_and_started_again_loses_nothing(tmp_path: Path) -> None:
    service = Service(tmp_path / "server", None, 1).start()
    database = f"sqlite:///{tmp_path / 'server' / 'hostseal.db'}"
    hosts = make_hosts(10)
    try:
        prepare(service, hosts, database)

        async def load() -> Fleet:
            fleet = Fleet(service.urls, service.ca)

            async def crash() -> None:
                await asyncio.sleep(3)
                await asyncio.to_thread(service.instances[0].kill)
                await asyncio.sleep(1)
                await asyncio.to_thread(service.instances[0].start)

            fault = asyncio.create_task(crash())
            await open_loop(fleet, hosts, rate=10, duration=10)
            await fault
            await fleet.close()
            return fleet

        out = asyncio.run(load()).outcome
    finally:
        service.close()
    assert out.failed == 0, out.errors
    assert out.retries > 0, "the instance was not seen down"
    engine = create_engine(database)
    with engine.connect() as connection:
        stored = dict(
            connection.execute(
                select(Host.name, func.count(StoredVerdict.id))
                .join(StoredVerdict)
                .where(StoredVerdict.status == "Passed")
                .group_by(Host.name)
            ).all()
        )
    engine.dispose()
    for host in hosts:
        accepted = out.per_host.get(host.name, 0) + (1 if host is hosts[-1] else 0)
        unanswered = out.ambiguous_per_host.get(host.name, 0)
        assert accepted <= stored.get(host.name, 0) <= accepted + unanswered, host.name
