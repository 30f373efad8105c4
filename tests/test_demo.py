"""The README's run command: the demo runs end to end on a lab host and tells the story."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.swtpm


def test_demo_runs(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTSEAL_LAB_DIR": str(tmp_path / "lab"), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "hostseal.cli", "demo"],
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
