"""Issue 12 item 15: a host that stops reporting is shown as not reporting (API, key release)
as soon as it is late, gets an alarm of its own from the scheduler's job, and both clear when
it reports again. Time moves on the server's clock; nothing sleeps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from hostseal.keyprovider import AttestationGate, HttpVerdictSource, KeyReleaseRefused
from hostseal.server import scheduler
from hostseal.server.http.web import hostrows
from hostseal.server.settings import ServerSettings

from ._softtpm import SoftTpm
from .conftest import Server

KIND = "host-not-reporting"


def _passed(server: Server, agent: str, tpm: SoftTpm) -> None:
    server.attest(agent, tpm)
    captured = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "golden", "host": "host1", "reason": "lab baseline"},
    )
    assert captured.status_code == 200, captured.text
    assert server.attest(agent, tpm)["status"] == "Passed"


def _gate(server: Server, agent: str, tmp_path: object) -> AttestationGate:
    """The host's key release check, asking this server (through its ASGI app)."""
    from pathlib import Path

    def forward(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        answer = server.api.get(request.url.path, token=token)
        return httpx.Response(answer.status_code, content=answer.content)

    token_file = Path(str(tmp_path)) / "agent.token"
    token_file.write_text(agent)
    source = HttpVerdictSource("https://attest.example", token_file)
    source.transport = httpx.MockTransport(forward)
    return AttestationGate(source, "host1")


def _not_reporting(server: Server) -> list[dict[str, Any]]:
    return [a for a in server.alarms(state="active") if a["kind"] == KIND]


def test_a_silent_host_is_not_reporting_gets_an_alarm_and_no_key(
    server: Server, tpm: SoftTpm, agent: str, tmp_path: object
) -> None:
    _passed(server, agent, tpm)
    gate = _gate(server, agent, tmp_path)
    gate.release_check()  # passed and reporting: released
    me = scheduler.start(server.ctx, 8443)
    scheduler.run_due(server.ctx, me)
    last = server.clock.now()

    # 3 x the 5-minute interval later, before the scheduler's job has run: shown late already
    server.clock.advance(timedelta(minutes=15, seconds=1))
    host = server.host("host1")
    assert host["status"] == "not-reporting"
    assert host["last_verdict"] == "Passed"
    assert host["message"] == (
        f"No attestation since {last.isoformat()} (expected every 5 min; a host is not "
        "reporting after 15 min): its last verdict is no longer current."
    )
    [listed] = server.api.get("/v1/hosts", token=server.viewer).json()
    assert listed["status"] == "not-reporting"
    with pytest.raises(KeyReleaseRefused) as refused:
        gate.release_check()
    assert refused.value.message.startswith(
        "Host 'host1' did not pass attestation (last status: not-reporting: No attestation "
        f"since {last.isoformat()}"
    )
    assert "Start the agent" in refused.value.remedy

    # the scheduler's job raises the alarm (once), audited
    assert "stale-hosts" in scheduler.run_due(server.ctx, me)
    [alarm] = _not_reporting(server)
    assert alarm["title"] == "Host not reporting alarm"
    assert alarm["message"] == (
        f"Host 'host1' has not reported an attestation since {last.isoformat()} (expected every "
        "5 min): it may be down, disconnected, or its agent stopped."
    )
    assert server.audit(action="host.not-reporting")[0]["host"] == "host1"
    with server.ctx.sessions() as session:  # the dashboard's row
        [row] = hostrows.host_rows(session)
    assert (row.status, row.state.word) == ("not-reporting", "Not reporting")
    assert row.message == (
        f"No attestation since {last:%Y-%m-%d %H:%M} UTC: the host stopped reporting"
    )
    server.clock.advance(timedelta(minutes=2))
    scheduler.run_due(server.ctx, me)
    assert len(_not_reporting(server)) == 1
    reset = server.api.post(
        f"/v1/alarms/{alarm['id']}/reset", token=server.operator, json={"comment": "fine"}
    )
    assert reset.status_code == 409
    assert "has not reported an attestation since" in reset.json()["message"]

    # it reports again: shown passed, alarm cleared, key released
    assert server.attest(agent, tpm)["status"] == "Passed"
    assert server.host("host1")["status"] == "passed"
    assert _not_reporting(server) == []
    [cleared] = [a for a in server.alarms() if a["kind"] == KIND]
    assert [e["event"] for e in cleared["history"]] == ["raised", "cleared"]
    gate.release_check()


def test_the_threshold_is_a_multiple_of_the_report_interval() -> None:
    default = ServerSettings.from_env({})
    assert default.report_interval == timedelta(minutes=5)
    assert default.stale_intervals == 3
    assert default.stale_after == timedelta(minutes=15)
    tuned = ServerSettings.from_env(
        {"HOSTSEAL_SERVER_REPORT_INTERVAL": "60", "HOSTSEAL_SERVER_STALE_INTERVALS": "4"}
    )
    assert tuned.stale_after == timedelta(minutes=4)
    explicit = ServerSettings.from_env({"HOSTSEAL_SERVER_STALE_AFTER": "600"})
    assert explicit.stale_after == timedelta(minutes=10)
