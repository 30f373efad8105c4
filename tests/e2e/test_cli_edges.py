"""Issue 16, first run and the CLI, live: ``agent run --once`` exits 1 on a Failed verdict,
``--tcti`` works after the sub-command, and an admin command with a wrong token is not told
its host is not enrolled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _service import hostseal
from hostseal import lab
from hostseal.lab import LabHost
from hostseal.lab.firmware import DEFAULT_CMDLINE

from .conftest import Fleet

pytestmark = pytest.mark.swtpm


def test_tpm_info_takes_tcti_after_the_sub_command(lab_host: LabHost) -> None:
    done = hostseal("tpm", "info", "--tcti", lab_host.tcti, "--json")
    assert done.returncode in (0, 1), done.stderr  # 1: a prerequisite of a real host fails
    assert json.loads(done.stdout)["tcti"] == lab_host.tcti


def test_an_admin_command_with_a_wrong_token_is_not_told_to_enrol(fleet: Fleet) -> None:
    done = fleet.service.cli("not-a-token", "host", "list")
    assert done.returncode == 1, done.stderr
    assert "Known issue" not in done.stderr, done.stderr
    assert "not enrolled" not in done.stderr


def _policy(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "format": "hostseal-reference-policy",
                "version": 1,
                "name": "no-shell",
                "kernel_cmdlines": [DEFAULT_CMDLINE],
                "kernel_cmdline_required": ["ro"],
                "quote_pcrs": [8],
            }
        )
    )
    return path


def test_agent_run_once_exits_1_when_the_verdict_is_failed(fleet: Fleet, tmp_path: Path) -> None:
    service = fleet.service
    fleet.add("esx1")
    assert fleet.agent("esx1").enrol() == "pending-approval"
    for args in (
        ("host", "approve", "esx1", "--reason", "lab host"),
        ("policy", "set", "no-shell", str(_policy(tmp_path / "p.json")), "--reason", "std"),
        ("policy", "assign", "no-shell", "esx1", "--reason", "lab host"),
    ):
        done = service.cli(service.operator, *args)
        assert done.returncode == 0, done.stderr
    shell = DEFAULT_CMDLINE + " init=/bin/sh"
    host = lab.reboot(fleet.lab_dir, "esx1", fleet.hosts["esx1"].boot.with_changes(
        kernel_cmdline=shell))  # fmt: skip

    done = hostseal(
        "--tcti", host.tcti, "agent", "run", "--once", "--name", "esx1",
        "--server", service.url, "--ca", str(service.ca), "--eventlog", str(host.eventlog),
        "--bootbank", str(fleet.bootbank("esx1")),
        "--state-dir", str(fleet.root / "esx1" / "agent"),
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (
        1,
        f"esx1: Failed\n  Kernel command line not allowed by policy: {shell}\n",
    ), done.stderr
