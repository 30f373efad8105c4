"""Reads of the recovery keys say why and who (issue 12, item 16): a person gives a reason, the
agent's escrow reads are recorded as the agent's."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from hostseal.agent.run import Agent, AgentConfig
from hostseal.doctor.observe import audit_listings
from hostseal.secureconfig.store import Store

from .conftest import Env

pytestmark = pytest.mark.swtpm


def _reads(env: Env) -> list[dict[str, object]]:
    return [r for r in Store(env.bootbank).audit_records() if r["action"] == "recovery.list"]


def test_a_person_must_give_a_reason(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    refused = env.run("recovery", "list")
    assert refused.code == 1
    assert "Reading the recovery keys needs a reason, and none was given." in refused.err
    assert "Say why with --reason" in refused.err
    assert "Key" not in refused.out
    blank = env.run("recovery", "list", "--reason", "   ")
    assert blank.code == 1 and "needs a reason" in blank.err
    assert _reads(env) == []
    shown = env.ok("recovery", "list", "--reason", "ticket OPS-42: board swap")
    [read] = _reads(env)
    assert read["reason"] == "ticket OPS-42: board swap"
    assert read["reader"] == "person"
    assert read["user"] == pwd.getpwuid(os.getuid()).pw_name
    assert str(read["recovery_ids"][0]) in shown.out  # type: ignore[index]


def test_agent_escrow_reads_are_recorded_as_the_agent(env: Env, tmp_path: Path) -> None:
    env.ok("config", "save", "--from", str(env.config))
    agent = Agent(
        AgentConfig(
            name="esx1",
            server="https://attest.example:8443",
            ca=None,
            tcti=env.host.tcti,
            eventlog=env.host.eventlog,
            bootbank=env.bootbank,
            state_dir=tmp_path / "agent",
        )
    )
    _, to_escrow = agent._secure_config()
    assert len(to_escrow) == 1
    [read] = _reads(env)
    assert read["reader"] == "agent"
    assert read["reason"] == "escrow to https://attest.example:8443"
    assert read["user"] == pwd.getpwuid(os.getuid()).pw_name
    # The doctor does not count the agent's read as a person having seen (and saved) the key.
    assert audit_listings(Store(env.bootbank).audit_records()) == {}
    env.ok("recovery", "list", "--reason", "saving it for the safe")
    assert list(audit_listings(Store(env.bootbank).audit_records())) == read["recovery_ids"]
