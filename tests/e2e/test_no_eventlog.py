"""A boot that left no TCG event log (REALBOOT obstacle 4), end to end: the agent still sends
its quote, says on each attempt what is missing and what to do, and the service's verdict says
that no event log was presented -- Failed with an alarm for a host whose policy needs the log,
never a crash, never a claim that a log verified."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from _service import hostseal
from hostseal.hostinfo import EventLogUnreadable, NoEventLog

from .conftest import Fleet
from .test_fleet import enrol_and_approve, three_passing_hosts

pytestmark = pytest.mark.swtpm

NO_LOG = "No TCG event log for this boot at"
EFI_STUB = "in GRUB use linuxefi and initrdefi instead of linux and initrd"


def test_a_host_with_a_policy_fails_with_no_event_log_and_raises_an_alarm(
    fleet: Fleet, tmp_path: Path
) -> None:
    three_passing_hosts(fleet)
    agent = fleet.agent("esx1")
    agent.config = dataclasses.replace(agent.config, eventlog=tmp_path / "missing")
    for _attempt in range(2):  # every attempt says it
        outcome = agent.attest_once()
        assert outcome.status == "Failed"
        assert "No event log was presented: only PCR values were checked" in outcome.messages
        assert "Secure Boot state could not be checked: no event log was presented" in (
            outcome.messages
        )
        [problem] = outcome.problems
        assert isinstance(problem, NoEventLog)
        assert problem.message.startswith(f"{NO_LOG} {tmp_path / 'missing'}")
        assert EFI_STUB in problem.remedy
    shown = fleet.host("esx1")
    assert shown["status"] == "failed"
    [alarm] = fleet.alarms("esx1")
    assert alarm["state"] == "raised"


def test_without_a_policy_the_verdict_does_not_claim_a_log_verified(
    fleet: Fleet, tmp_path: Path
) -> None:
    enrol_and_approve(fleet, "esx9")
    agent = fleet.agent("esx9")
    agent.config = dataclasses.replace(agent.config, eventlog=tmp_path / "missing")
    outcome = agent.attest_once()
    assert outcome.status == "Warning"
    [message] = outcome.messages
    assert "event log verified" not in message
    assert message.startswith(
        "No reference policy is assigned to this host, and it presented no event log"
    )


def test_agent_run_once_says_what_is_missing_and_exits_1(fleet: Fleet, tmp_path: Path) -> None:
    three_passing_hosts(fleet)
    agent = fleet.agent("esx2").config
    missing = tmp_path / "missing"
    args = [
        "agent", "run", "--once", "--server", fleet.service.url, "--ca", str(fleet.service.ca),
        "--name", "esx2", "--state-dir", str(agent.state_dir), "--bootbank", str(agent.bootbank),
        "--eventlog", str(missing), "--tcti", agent.tcti,
    ]  # fmt: skip
    done = hostseal(*args)
    assert done.returncode == 1, done.stderr  # the verdict is Failed
    assert "Traceback" not in done.stdout + done.stderr
    assert "esx2: Failed" in done.stdout
    assert "No event log was presented" in done.stdout
    assert f"Problem: {NO_LOG} {missing}: the file does not exist." in done.stderr
    assert "What to do: Point --eventlog / HOSTSEAL_EVENTLOG" in done.stderr
    as_json = hostseal(*args, "--json")
    assert as_json.returncode == 1
    [problem] = json.loads(as_json.stdout)["problems"]
    assert problem["error"] == "NoEventLog" and EFI_STUB in problem["remedy"]


def test_an_unreadable_log_is_an_error_not_a_silent_attestation_without_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A log the agent may not read (not root) is no evidence of a boot without a log."""
    three_passing_hosts(fleet)
    agent = fleet.agent("esx3")
    directory = tmp_path / "a-directory"
    directory.mkdir()
    agent.config = dataclasses.replace(agent.config, eventlog=directory)
    with pytest.raises(EventLogUnreadable) as err:
        agent.attest_once()
    assert err.value.message.startswith(f"Cannot read the measured-boot event log {directory}")
    assert err.value.remedy.startswith("Run as root")
    assert fleet.host("esx3")["status"] == "passed"  # nothing was sent
