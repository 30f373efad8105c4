"""Closed enrolment against a real server (HOSTSEAL_SERVER_ENROLMENT=token): a real agent on a
lab host enrols only with the token an admin made with the CLI, given to it in a file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from _service import live_service
from hostseal.agent import Agent, AgentConfig
from hostseal.client.http import ApiError

from .conftest import Fleet

pytestmark = pytest.mark.swtpm


@pytest.fixture
def closed_fleet(tmp_path: Path, lab_dir: Path) -> Iterator[Fleet]:
    env = {"HOSTSEAL_SERVER_ENROLMENT": "token"}
    with live_service(tmp_path / "server", env) as service:
        yield Fleet(service, lab_dir, tmp_path)


def test_agent_enrols_only_with_an_enrolment_token(closed_fleet: Fleet, tmp_path: Path) -> None:
    fleet = closed_fleet
    fleet.add("esx1")
    with pytest.raises(ApiError) as err:
        fleet.agent("esx1").enrol()
    assert err.value.status == 401 and err.value.kind == "EnrolmentTokenRefused"
    assert "--enrolment-token-file" in err.value.remedy

    made = fleet.service.cli(
        fleet.service.admin, "host", "enrolment-token", "--host", "esx1", "--reason", "rack 4",
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token_file = tmp_path / "enrolment-token"
    token_file.write_text(json.loads(made.stdout)["token"] + "\n")
    token_file.chmod(0o600)
    host = fleet.hosts["esx1"]
    agent = Agent(
        AgentConfig(
            name="esx1",
            server=fleet.service.url,
            ca=fleet.service.ca,
            tcti=host.tcti,
            eventlog=host.eventlog,
            bootbank=fleet.bootbank("esx1"),
            state_dir=fleet.root / "esx1" / "agent",
            interval=1,
            enrolment_token_file=token_file,
        )
    )
    assert agent.enrol() == "pending-approval"
    assert fleet.host("esx1")["status"] == "pending-approval"
    with pytest.raises(ApiError) as used:
        agent.enrol()  # the token was for one enrolment
    assert used.value.status == 401 and "used up" in used.value.message
