"""Issue 12, item 12: the data directory and the database files are private to the server.

A fresh data directory is 0700 and ``hostseal.db`` with its WAL and SHM files are 0600 whatever
the umask; an existing data directory that other users can read or enter is refused at start
with an error that says how to fix it (as the server key is), before anything is read from it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from _service import free_port, hostseal
from hostseal.server.context import ServerContext
from hostseal.server.datadir import DataDirTooOpen
from hostseal.server.settings import ServerSettings


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_files_are_0600_and_directory_0700(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "server"
    ctx = ServerContext.open(ServerSettings(data_dir=data))
    try:
        with ctx.engine.begin() as connection:  # a write: the WAL and SHM files exist now
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
            connection.execute(text("INSERT INTO probe VALUES (1)"))
        files = {p.name: _mode(p) for p in data.iterdir() if p.name.startswith("hostseal.db")}
        assert set(files) >= {"hostseal.db", "hostseal.db-wal", "hostseal.db-shm"}, files
        assert all(mode == 0o600 for mode in files.values()), files
        assert _mode(data) == 0o700
    finally:
        ctx.close()


def test_existing_loose_database_file_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    data = tmp_path / "server"
    ServerContext.open(ServerSettings(data_dir=data)).close()
    (data / "hostseal.db").chmod(0o644)
    ServerContext.open(ServerSettings(data_dir=data)).close()
    assert _mode(data / "hostseal.db") == 0o600


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o707])
def test_group_or_world_accessible_data_directory_is_refused(tmp_path: Path, mode: int) -> None:
    data = tmp_path / "server"
    data.mkdir()
    data.chmod(mode)
    with pytest.raises(DataDirTooOpen) as caught:
        ServerContext.open(ServerSettings(data_dir=data))
    assert f"(mode {mode:04o})" in caught.value.message
    assert "other users" in caught.value.message
    assert caught.value.remedy == f"Restrict it: chmod 700 {data}."
    assert not (data / "server.key").exists()  # nothing created in a directory others can read
    assert not (data / "hostseal.db").exists()


def test_server_run_refuses_a_loose_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "server"
    data.mkdir()
    data.chmod(0o755)
    bind = f"127.0.0.1:{free_port()}"
    done = hostseal("server", "run", "--data-dir", str(data), "--bind", bind, timeout=20)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "readable by other users" in done.stderr
    assert f"chmod 700 {data}" in done.stderr
    assert not (data / "hostseal.db").exists()
