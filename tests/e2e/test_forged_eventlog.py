"""Issue 12 item 1, live: a host boots ``init=/bin/sh``, then rewrites the text of its PCR 8
event in its event-log file to the allowed command line (digests untouched, so the log still
replays to the quoted PCRs). A real agent attests to a real ``hostseal server``: Failed, with a
message that says the event data does not match its measurement; the dashboard marks the event."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from _forge import find, rewrite
from hostseal import lab
from hostseal.lab.firmware import DEFAULT_CMDLINE
from hostseal.measure import EventType

from .conftest import Fleet

pytestmark = pytest.mark.swtpm

SHELL = DEFAULT_CMDLINE + " init=/bin/sh"


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


def _host_page(fleet: Fleet, name: str) -> str:
    """The host's dashboard page, as a viewer who logged in with the login form."""
    with fleet.service.http() as client:
        form = client.get("/ui/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        done = client.post(
            "/ui/login",
            data={"token": fleet.service.viewer, "csrf": csrf.group(1), "next": "/ui/"},
        )
        assert done.status_code in (200, 303), done.text
        page = client.get(f"/ui/hosts/{name}")
        assert page.status_code == 200, page.text
        return html.unescape(page.text)


def test_a_rewritten_command_line_fails_with_the_measurement_message(
    fleet: Fleet, tmp_path: Path
) -> None:
    service = fleet.service
    fleet.add("esx1")
    assert fleet.agent("esx1").enrol() == "pending-approval"
    approved = service.cli(service.operator, "host", "approve", "esx1", "--reason", "lab host")
    assert approved.returncode == 0, approved.stderr
    made = service.cli(
        service.operator, "policy", "set", "no-shell", str(_policy(tmp_path / "p.json")),
        "--reason", "only the standard command line",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assigned = service.cli(
        service.operator, "policy", "assign", "no-shell", "esx1", "--reason", "lab host"
    )
    assert assigned.returncode == 0, assigned.stderr
    assert fleet.attest("esx1").status == "Passed"

    # The host boots a root shell: the genuine log says so, and fails.
    host = lab.reboot(fleet.lab_dir, "esx1", fleet.hosts["esx1"].boot.with_changes(
        kernel_cmdline=SHELL))  # fmt: skip
    honest = fleet.attest("esx1")
    assert honest.status == "Failed"
    assert honest.messages == [f"Kernel command line not allowed by policy: {SHELL}"]

    # The attacker (root on the host) rewrites the text of the PCR 8 event, digests untouched.
    raw = host.eventlog.read_bytes()
    index = find(raw, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    forged = rewrite(raw, index, b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b"\0")
    assert forged != raw and DEFAULT_CMDLINE.encode() + b"\0" in forged
    host.eventlog.write_bytes(forged)

    outcome = fleet.attest("esx1")
    assert outcome.status == "Failed"
    assert outcome.messages == [
        f"The event data of PCR 8 event {index} (EV_IPL, kernel command line) does not match "
        "its measurement: the event log was altered. Investigate the host and reboot it to "
        "record a new log"
    ]
    shown = fleet.host("esx1")
    assert shown["status"] == "failed"

    # The dashboard's decoded log marks the event, and the boot applications' paths.
    page = _host_page(fleet, "esx1")
    assert (
        f"kernel_cmdline: {DEFAULT_CMDLINE} (FORGED: the event data does not match its "
        "measurement)" in page
    )
    assert "\\EFI\\debian\\shimx64.efi (950000 bytes) (unverified)" in page
