"""The instance registry and the job scheduler in-process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from _service import hostseal
from hostseal.server import create_app, instances, scheduler
from hostseal.server.clock import FixedClock
from hostseal.server.settings import ServerSettings, ServerSettingsInvalid

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerSettings]:
    url = None
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres")
        name = f"hostseal_sched_{next(_names)}"
        url = postgres.create_database(name)
    yield ServerSettings(data_dir=tmp_path / "server", database_url=url, instance_name="me")
    if url is not None:
        postgres.drop_database(name)


def test_an_instance_is_alive_while_it_runs_and_stopped_after(settings: ServerSettings) -> None:
    clock = FixedClock()
    app = create_app(settings, clock=clock)
    from hostseal.server.tokens import create_token

    with app.state.ctx.sessions.begin() as session:
        viewer = create_token(session, name="v", role="viewer", now=clock.now())
    auth = {"Authorization": f"Bearer {viewer}"}

    async def go() -> None:
        async with app.router.lifespan_context(app):  # starts and stops the background work
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                shown = (await client.get("/v1/instances", headers=auth)).json()
                assert [(i["name"], i["state"]) for i in shown["instances"]] == [("me", "alive")]
                key_id = app.state.ctx.server_key.key_id
                assert shown["instances"][0]["server_key_id"] == key_id
                metrics = (await client.get("/metrics", headers=auth)).text
                assert 'hostseal_instances{state="alive"} 1' in metrics
                clock.advance(timedelta(seconds=31))  # three missed 10 s heartbeats
                shown = (await client.get("/v1/instances", headers=auth)).json()
                assert shown["instances"][0]["state"] == "not-responding"

    anyio.run(go)
    db = ["--db", settings.db_url] if settings.database_url else []
    listed = hostseal("server", "instances", "--data-dir", str(settings.data_dir), *db, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [i["state"] for i in json.loads(listed.stdout)["instances"]] == ["stopped"]
    assert listed.returncode == 0


def test_due_jobs_run_once_then_wait_for_their_interval(settings: ServerSettings) -> None:
    clock = FixedClock()
    ctx: Any = create_app(settings, clock=clock).state.ctx
    me = scheduler.start(ctx, 8443)
    assert scheduler.run_due(ctx, me) == ["stale-hosts", "prune"]
    assert scheduler.run_due(ctx, me) == []
    clock.advance(timedelta(seconds=61))
    assert scheduler.run_due(ctx, me) == ["stale-hosts"]
    with ctx.sessions() as session:
        jobs = {j["name"]: j for j in instances.list_jobs(session)}
    assert jobs["stale-hosts"]["last_instance"] == "me"
    assert jobs["stale-hosts"]["last_result"] == "0 host(s) marked not-reporting"
    clock.advance(timedelta(days=2))
    scheduler.beat(ctx, me)
    scheduler.run_due(ctx, me)  # prune forgets instances silent for a day, but not this one
    with ctx.sessions() as session:
        assert [i["name"] for i in instances.list_instances(session, clock.now())] == ["me"]
    ctx.close()


def test_scale_settings_from_the_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "HOSTSEAL_SERVER_HEARTBEAT": "3",
            "HOSTSEAL_SERVER_STALE_CHECK": "5",
            "HOSTSEAL_SERVER_INSTANCE": "attest-2",
            "HOSTSEAL_SERVER_DB": "postgresql://hostseal@db/hostseal",
        }
    )
    assert settings.heartbeat_every == timedelta(seconds=3)
    assert settings.staleness_check_every == timedelta(seconds=5)
    assert settings.instance_name == "attest-2"
    assert settings.db_url == "postgresql+psycopg://hostseal@db/hostseal"
    with pytest.raises(ServerSettingsInvalid, match="HOSTSEAL_SERVER_HEARTBEAT='0' is not a"):
        ServerSettings.from_env({"HOSTSEAL_SERVER_HEARTBEAT": "0"})


def test_an_instance_with_another_server_key_is_reported(
    settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FixedClock()
    ctx: Any = create_app(settings, clock=clock).state.ctx
    with ctx.sessions.begin() as session:
        instances.register(
            session, name="other", server_key_id="0" * 16, heartbeat=timedelta(seconds=10),
            now=clock.now(),
        )  # fmt: skip
    with caplog.at_level("ERROR", logger="hostseal.server"):
        scheduler.start(ctx, 8443)
    ctx.close()
    assert "these instances use another: other (server key 0000000000000000)" in caplog.text
    assert "give every instance the same server.key" in caplog.text
