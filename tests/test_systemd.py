"""The systemd units hostseal installs are valid for systemd (systemd-analyze verify)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hostseal import systemd

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd
@pytest.mark.parametrize("which", ["agent", "server"])
def test_units_verify(tmp_path: Path, which: str) -> None:
    exe = shutil.which("true") or "/usr/bin/true"
    if which == "agent":
        name = systemd.AGENT_UNIT
        text = systemd.agent_unit(exe, "https://attest:8443", tmp_path / "ca.pem")
        target = "multi-user.target"
    else:
        name = systemd.SERVER_UNIT
        text = systemd.server_unit(exe, Path("/var/lib/hostseal/server"), "0.0.0.0:8443")
        target = "multi-user.target"
    unit, link = systemd.install(tmp_path, name, text, target)
    assert link.resolve() == unit.resolve()
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "Restart=always" in unit.read_text()
