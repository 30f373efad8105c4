"""Commands that read a server's data directory do not create one silently: only
``hostseal server run`` does (mode 0700); the others say it is missing and how to create it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from _service import hostseal

READERS = {
    "token create": ("server", "token", "create", "--role", "admin", "--name", "a"),
    "token list": ("server", "token", "list"),
    "token revoke": ("server", "token", "revoke", "a"),
    "instances": ("server", "instances"),
    "ca-cert": ("server", "ca-cert"),
}


@pytest.mark.parametrize("command", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_missing_data_directory_is_not_created(
    tmp_path: Path, command: tuple[str, ...], how: str
) -> None:
    data = tmp_path / "server"
    if how == "flag":
        done = hostseal(*command, "--data-dir", str(data))
    else:
        done = hostseal(*command, env={"HOSTSEAL_SERVER_DATA": str(data)})
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"Error: The server's data directory {data} does not exist; nothing was created.\n"
        f"What to do: Start the server once to create it (hostseal server run --data-dir "
        f"{data}), or give the existing one with --data-dir DIR (or HOSTSEAL_SERVER_DATA).\n"
    )
    assert not data.exists()


def test_an_existing_data_directory_is_used(tmp_path: Path) -> None:
    data = tmp_path / "server"
    data.mkdir(mode=0o700)
    done = hostseal("server", "token", "list", "--data-dir", str(data), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
