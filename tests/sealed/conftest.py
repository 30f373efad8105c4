"""Fixtures for the sealed configuration on lab hosts: a host, a bootbank, a configuration."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.cli.main import main
from hostseal.lab import LabHost


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Env:
    """One lab host, its bootbank and a configuration directory, driven through the CLI."""

    lab_dir: Path
    host: LabHost
    bootbank: Path
    config: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    shm: Path
    unlocks: int = 0

    def target(self) -> Path:
        """A fresh directory (not yet created) on tmpfs to unlock into."""
        self.unlocks += 1
        return self.shm / f"unlocked-{self.unlocks}"

    def use(self, host: LabHost) -> None:
        self.host = host
        self.monkeypatch.setenv("HOSTSEAL_TCTI", host.tcti)
        self.monkeypatch.setenv("HOSTSEAL_EVENTLOG", str(host.eventlog))

    def run(self, *args: str) -> Result:
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = self.capsys.readouterr()
        return Result(int(done.value.code or 0), out, err)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.code == 0, result.err
        return result

    def reboot(self, **changes: object) -> None:
        self.use(lab.reboot(self.lab_dir, self.host.name, self.host.boot.with_changes(**changes)))

    def recovery_key(self) -> tuple[str, str]:
        [entry] = self.ok("recovery", "list", "--json", "--reason", "test").json()  # type: ignore[misc]
        return entry["recovery_id"], entry["key"]

    def key_file(self, key: str) -> str:
        path = self.bootbank.parent / "key.txt"
        path.write_text(key + "\n")
        return str(path)

    def snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.bootbank.iterdir())}


@pytest.fixture
def shm() -> Iterator[Path]:
    """A scratch directory on tmpfs, where unlocked configurations may be written."""
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="hostseal-test-") as d:
        yield Path(d)


@pytest.fixture
def env(
    lab_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shm: Path,
) -> Env:
    host = lab.start(lab_dir, "esx1")
    config = tmp_path / "etc-config"
    (config / "libvirt" / "secrets").mkdir(parents=True)
    (config / "libvirt" / "secrets" / "vm1.base64").write_text("TOP-SECRET-LIBVIRT-PASSPHRASE\n")
    (config / "ssh").mkdir()
    (config / "ssh" / "ssh_host_ed25519_key").write_text("PRIVATE-SSH-HOST-KEY-MATERIAL\n")
    os.chmod(config / "ssh" / "ssh_host_ed25519_key", 0o600)
    bootbank = tmp_path / "bootbank"
    monkeypatch.setenv("HOSTSEAL_BOOTBANK", str(bootbank))
    e = Env(lab_dir, host, bootbank, config, monkeypatch, capsys, shm)
    e.use(host)
    return e
