"""A recovery key or password piped into a prompt is read as a line: no GetPassWarning, no
"may be echoed" warning, no second confirmation line required."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _service import hostseal
from hostseal.secureconfig.recoverykey import RecoveryKey

GETPASS_NOISE = ("GetPassWarning", "may be echoed", "Repeat for confirmation", "Aborted")


def _run(*args: str, stdin: str, env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "hostseal.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_piped_recovery_key_is_read_without_getpass(tmp_path: Path) -> None:
    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello\n")
    key = RecoveryKey.generate().formatted_key
    code, out, err = _run(
        "config", "--bootbank", str(tmp_path / "bb"), "restore", str(not_a_backup),
        "--recovery-key",
        stdin=key + "\n",
        env={"HOSTSEAL_TCTI": "device:/dev/nonexistent"},
    )  # fmt: skip
    for noise in GETPASS_NOISE:
        assert noise not in out + err, noise
    # The key was read and accepted; the refusal is about the file.
    assert code == 1
    assert f"Error: {not_a_backup} is not a hostseal configuration backup" in err


def test_piped_password_is_read_once_without_getpass(tmp_path: Path) -> None:
    env = {"HOSTSEAL_KEYPROVIDER_DIR": str(tmp_path / "kp")}
    assert hostseal("keyprovider", "add", "kp", "--type", "native", env=env).returncode == 0
    backup = tmp_path / "kp.backup"
    code, out, err = _run(
        "keyprovider", "backup", "kp", "--out", str(backup), stdin="correct horse\n", env=env
    )
    for noise in GETPASS_NOISE:
        assert noise not in out + err, noise
    assert code == 0, err
    assert backup.is_file()
    restored = _run(
        "keyprovider", "add", "kp2", "--type", "native", "--from-backup", str(backup),
        stdin="correct horse\n", env=env,
    )  # fmt: skip
    assert restored[0] == 0, restored[2]
    assert "restored from its backup" in restored[1]
