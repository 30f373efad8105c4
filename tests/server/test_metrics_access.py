"""Issue 12, item 16 (/metrics): by default ``/metrics`` needs a token, of the ``metrics`` role
(which reads nothing else) or of any user role; ``HOSTSEAL_SERVER_METRICS=open`` opens it."""

from __future__ import annotations

from dataclasses import replace

from hostseal.server.clock import FixedClock
from hostseal.server.settings import ServerSettings, ServerSettingsInvalid
from hostseal.server.tokens import create_token

from .conftest import Server, make_server


def _metrics_token(server: Server) -> str:
    with server.ctx.sessions.begin() as session:
        return create_token(session, name="prometheus", role="metrics", now=server.clock.now())


def test_metrics_need_a_token_by_default(server: Server) -> None:
    assert ServerSettings().metrics_access == "token"
    refused = server.api.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"] == "Unauthenticated"
    for token in (server.viewer, server.operator, server.admin, _metrics_token(server)):
        answer = server.api.get("/metrics", token=token)
        assert answer.status_code == 200, answer.text
        assert "hostseal_hosts{" in answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_a_metrics_token_reads_nothing_else(server: Server) -> None:
    token = _metrics_token(server)
    for path in ("/v1/hosts", "/v1/alarms", "/v1/policies", "/v1/audit", "/v1/instances"):
        answer = server.api.get(path, token=token)
        assert answer.status_code == 403, (path, answer.text)
        assert "has the metrics role" in answer.json()["message"]


def test_an_agent_token_cannot_read_metrics(server: Server, agent: str) -> None:
    answer = server.api.get("/metrics", token=agent)
    assert answer.status_code == 403
    assert answer.json()["message"] == "An agent token cannot read /metrics."
    assert "--role metrics" in answer.json()["remedy"]


def test_open_metrics_need_no_token(settings: ServerSettings, clock: FixedClock) -> None:
    server = make_server(replace(settings, metrics_access="open"), clock)
    try:
        assert server.api.get("/metrics").status_code == 200
    finally:
        server.ctx.close()


def test_metrics_setting_from_the_environment() -> None:
    assert ServerSettings.from_env({"HOSTSEAL_SERVER_METRICS": "open"}).metrics_access == "open"
    assert ServerSettings.from_env({}).metrics_access == "token"
    try:
        ServerSettings.from_env({"HOSTSEAL_SERVER_METRICS": "public"})
    except ServerSettingsInvalid as err:
        assert err.message == "HOSTSEAL_SERVER_METRICS='public' is not a metrics access mode."
        assert err.remedy == "Use 'token' (the default: /metrics needs a token) or 'open'."
    else:
        raise AssertionError("accepted")


def test_a_metrics_token_cannot_log_in_to_the_dashboard(server: Server) -> None:
    import re

    import anyio
    import httpx

    token = _metrics_token(server)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.api.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://test") as client:
            page = await client.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf, page.text
            return await client.post("/ui/login", data={"token": token, "csrf": csrf.group(1)})

    answer = anyio.run(go)
    assert answer.status_code == 401
    assert "A metrics token cannot log in to the dashboard." in answer.text
