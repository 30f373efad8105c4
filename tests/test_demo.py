"""The README's run command (``hostseal demo``: the service with a lab fleet, until stopped) and
the sealed-configuration story (``hostseal demo seal``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.swtpm


def test_demo_seal_tells_the_story(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTSEAL_LAB_DIR": str(tmp_path / "lab"), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "hostseal.cli", "demo", "seal"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "hostseal tpm info",
        "IBM software TPM (swtpm)",
        "PCR 7: Secure Boot went from enabled to disabled",
        "Unable to restore the system configuration. A security violation was detected.",
        "Decrypted for rescue with the recovery key, but NOT sealed again",
        "Configuration restored to",
    ):
        assert expected in out, expected
    assert not any((tmp_path / "lab").iterdir())  # the demo host was removed
    assert "Mode TPM, Require Secure Boot true, sealed to PCRs 7 (sha256), recovery key {" in out
    for python_repr in ("True", "False", "None", "['", "[7]"):
        assert python_repr not in out, python_repr


def test_demo_fleet_runs_until_interrupted(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTSEAL_LAB_DIR": str(tmp_path / "lab"), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostseal.cli", "demo", "--interval", "2", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "All 3 hosts Passed." in line:
                break
        out = "".join(lines)
        assert "All 3 hosts Passed." in out, out
        for expected in (
            "viewer token",
            "operator token",
            "export HOSTSEAL_SERVER=https://",
            "--secure-boot off",
            "Press Ctrl-C to stop.",
        ):
            assert expected in out, expected
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "Stopped." in rest
    root = tmp_path / "lab" / "fleet-demo"
    pids = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True).stdout
    assert pids.strip() == "", f"processes left behind: {pids}"
