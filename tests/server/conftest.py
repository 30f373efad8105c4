"""Fixtures of the server tests: an app in-process (httpx ASGI transport), a fixed clock, tokens,
and software TPMs that enrol and attest through the API.

Every test that uses the ``settings`` fixture (so every ``server``) runs on both databases:
``[sqlite]`` (a file in the test's directory) and ``[postgresql]`` (a fresh database, copied from a
migrated template, on the session's private PostgreSQL server: the ``postgres`` fixture, which
skips with its reason when PostgreSQL is not installed). ``HOSTSEAL_TEST_DB=sqlite`` or
``=postgresql`` keeps one of them.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hostseal.client.wire import EvidenceIn, SecureConfig
from hostseal.server import create_app
from hostseal.server.clock import FixedClock
from hostseal.server.context import ServerContext
from hostseal.server.http.fastpath import FastPath
from hostseal.server.settings import ServerSettings
from hostseal.server.tokens import create_token

from ._softtpm import SoftTpm


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Api:
    """Synchronous calls into the ASGI app through httpx.ASGITransport."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, headers=headers, json=json, params=params)

        return anyio.run(go)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)


@dataclass
class Server:
    api: Api
    ctx: ServerContext
    clock: FixedClock
    viewer: str
    operator: str
    admin: str

    # --- the agent's side, driven with a software TPM -----------------------------------------

    def enrol_start(
        self, name: str, tpm: SoftTpm, certificate: bytes | None = None
    ) -> httpx.Response:
        return self.api.post(
            "/v1/enrol/start",
            json={
                "name": name,
                "ek_public": b64(tpm.ek_public),
                "ek_certificate": b64(certificate) if certificate else None,
                "ak_public": b64(tpm.ak_public),
            },
        )

    def enrol(
        self, name: str, tpm: SoftTpm, expect: int = 200, certificate: bytes | None = None
    ) -> dict[str, Any]:
        started = self.enrol_start(name, tpm, certificate)
        assert started.status_code == 200, started.text
        body = started.json()
        secret = tpm.activate(
            base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
        )
        finished = self.api.post(
            "/v1/enrol/finish",
            json={"enrolment_id": body["enrolment_id"], "secret": b64(secret)},
        )
        assert finished.status_code == expect, finished.text
        data: dict[str, Any] = finished.json()
        return data

    def challenge(self, agent: str) -> dict[str, Any]:
        response = self.api.post("/v1/attest/challenge", token=agent, json={})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def evidence(
        self,
        agent: str,
        tpm: SoftTpm,
        *,
        challenge: dict[str, Any] | None = None,
        secure_config: dict[str, Any] | None = None,
        eventlog: bytes | None = None,
        send_digest: bool = False,
        **quote_kw: Any,
    ) -> httpx.Response:
        """Quote ``challenge`` (a fresh one by default) and send the evidence; with
        ``send_digest`` the event log's SHA-256 goes instead of the log, as an agent does when
        the challenge names the log the server holds."""
        if challenge is None:
            challenge = self.challenge(agent)
        nonce = challenge["nonce"]
        pcrs = challenge.get("pcrs", list(range(8)))
        attest, signature, values = tpm.quote(bytes.fromhex(nonce), pcrs, **quote_kw)
        log = eventlog if eventlog is not None else tpm.eventlog
        body = EvidenceIn.of_quote(
            nonce=nonce,
            challenge=challenge.get("challenge", ""),
            quote=attest,
            signature=signature,
            pcrs=values,
            eventlog=None if send_digest else log,
            eventlog_sha256=hashlib.sha256(log).hexdigest() if send_digest else None,
            secure_config=SecureConfig.model_validate(secure_config) if secure_config else None,
        )
        return self.api.post("/v1/attest/evidence", token=agent, json=body.model_dump(mode="json"))

    def attest(self, agent: str, tpm: SoftTpm, **kw: Any) -> dict[str, Any]:
        response = self.evidence(agent, tpm, **kw)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def host(self, name: str) -> dict[str, Any]:
        response = self.api.get(f"/v1/hosts/{name}", token=self.viewer)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def alarms(self, **params: str) -> list[dict[str, Any]]:
        response = self.api.get("/v1/alarms", token=self.viewer, params=params)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()
        return data

    def audit(self, **params: str) -> list[dict[str, Any]]:
        response = self.api.get("/v1/audit", token=self.admin, params=params)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()
        return data


def make_server(settings: ServerSettings, clock: FixedClock, suffix: str = "1") -> Server:
    app = create_app(settings, clock=clock)
    ctx: ServerContext = app.state.ctx
    with ctx.sessions.begin() as session:
        tokens = {
            role: create_token(session, name=f"{role}-{suffix}", role=role, now=clock.now())
            for role in ("viewer", "operator", "admin")
        }
    return Server(
        Api(FastPath(app)), ctx, clock, tokens["viewer"], tokens["operator"], tokens["admin"]
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


DATABASES = ("sqlite", "postgresql")
# tests that look at the SQLite file itself
SQLITE_ONLY = {
    "test_keys_are_encrypted_in_the_database_under_a_key_outside_it": "reads the SQLite file",
}
_numbers = itertools.count()


def _databases() -> tuple[str, ...]:
    chosen = os.environ.get("HOSTSEAL_TEST_DB", "")
    if not chosen:
        return DATABASES
    if chosen not in DATABASES:
        raise pytest.UsageError(f"HOSTSEAL_TEST_DB={chosen!r}: use sqlite or postgresql")
    return (chosen,)


@pytest.fixture(scope="session")
def pg_template(postgres: Any) -> str:
    """A database migrated once; each test's database is a copy of it (fast)."""
    from hostseal.server.storage import engine as db

    name = "hostseal_template"
    engine = db.make_engine(postgres.create_database(name), pool_size=1)
    db.migrate(engine)
    engine.dispose()
    return name


@pytest.fixture(params=_databases())
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL of the test's server: None for SQLite (the data directory's file)."""
    if request.param == "sqlite":
        yield None
        return
    reason = SQLITE_ONLY.get(request.node.originalname)
    if reason:
        pytest.skip(f"SQLite only: {reason}")
    postgres = request.getfixturevalue("postgres")
    template = request.getfixturevalue("pg_template")
    name = f"hostseal_test_{os.getpid()}_{next(_numbers)}"
    yield postgres.create_database(name, template)
    postgres.drop_database(name)


@pytest.fixture(scope="module", params=_databases())
def live_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """For a real server process (``_service.live_service(data, env)``): the environment that
    points it, and the token commands, at the module's database ({} for SQLite)."""
    if request.param == "sqlite":
        yield {}
        return
    postgres = request.getfixturevalue("postgres")
    name = f"hostseal_live_{os.getpid()}_{next(_numbers)}"
    yield {"HOSTSEAL_SERVER_DB": postgres.create_database(name)}
    postgres.drop_database(name)


@pytest.fixture
def settings(tmp_path: Path, database: str | None) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "server", database_url=database)


@pytest.fixture
def server(settings: ServerSettings, clock: FixedClock) -> Iterator[Server]:
    srv = make_server(settings, clock)
    yield srv
    srv.ctx.close()


@pytest.fixture
def tpm() -> SoftTpm:
    return SoftTpm()


@pytest.fixture
def agent(server: Server, tpm: SoftTpm) -> str:
    """host1 enrolled (approved) with ``tpm``; its agent token."""
    data = server.enrol("host1", tpm)
    assert data["status"] == "pending-approval"
    response = server.api.post(
        "/v1/hosts/host1/approve", token=server.operator, json={"reason": "lab host"}
    )
    assert response.status_code == 200, response.text
    token: str = data["agent_token"]
    return token
