"""Fixtures of the doctor tests: the knowledge base, the CLI, lab hosts with a sealed
configuration."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostseal.doctor import KnowledgeBase, load_kb


@pytest.fixture(scope="session")
def kb() -> KnowledgeBase:
    return load_kb("en")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        data = json.loads(self.out)
        assert isinstance(data, dict)
        return data


@dataclass
class Cli:
    """Runs ``hostseal ...`` in-process, with the doctor command registered."""

    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> Result:
        from hostseal.cli.doctor import doctor
        from hostseal.cli.main import cli, main

        if "doctor" not in cli.commands:  # until the lead registers it in main._register
            cli.add_command(doctor)
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = self.capsys.readouterr()
        return Result(int(done.value.code or 0), out, err)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps at the terminal width
    return Cli(capsys)


@pytest.fixture
def shm() -> Iterator[Path]:
    """A scratch directory on tmpfs, where unlocked configurations may be written."""
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="hostseal-doctor-") as d:
        yield Path(d)
