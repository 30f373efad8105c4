"""A real attestation service with lab hosts and real agents (hostseal.agent) attesting to it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _service import Live, live_service
from hostseal import lab
from hostseal.agent import Agent, AgentConfig, AttestOutcome
from hostseal.lab import LabHost


@dataclass
class Fleet:
    service: Live
    lab_dir: Path
    root: Path
    hosts: dict[str, LabHost] = field(default_factory=dict)

    def add(self, name: str) -> LabHost:
        self.hosts[name] = lab.start(self.lab_dir, name)
        return self.hosts[name]

    def bootbank(self, name: str) -> Path:
        return self.root / name / "bootbank"

    def agent(self, name: str, *, escrow: bool = True) -> Agent:
        host = self.hosts[name] = lab.load(self.lab_dir, name)  # ports change at each boot
        return Agent(
            AgentConfig(
                name=name,
                server=self.service.url,
                ca=self.service.ca,
                tcti=host.tcti,
                eventlog=host.eventlog,
                bootbank=self.bootbank(name),
                state_dir=self.root / name / "agent",
                interval=1,
                escrow=escrow,
            )
        )

    def attest(self, name: str, **kw: bool) -> AttestOutcome:
        return self.agent(name, **kw).attest_once()

    def host(self, name: str) -> dict[str, object]:
        return self.service.cli_json(self.service.viewer, "host", "show", name)  # type: ignore[return-value]

    def alarms(self, name: str, *, all_states: bool = False) -> list[dict[str, object]]:
        args = ["alarm", "list", "--host", name] + (["--all"] if all_states else [])
        return self.service.cli_json(self.service.viewer, *args)  # type: ignore[return-value]


@pytest.fixture
def fleet(tmp_path: Path, lab_dir: Path) -> Iterator[Fleet]:
    with live_service(tmp_path / "server") as service:
        yield Fleet(service, lab_dir, tmp_path)


@pytest.fixture
def fast_nonce_fleet(tmp_path: Path, lab_dir: Path) -> Iterator[Fleet]:
    """A service whose nonces expire after one second."""
    env = {"HOSTSEAL_SERVER_NONCE_LIFETIME": "1"}
    with live_service(tmp_path / "server", env) as service:
        yield Fleet(service, lab_dir, tmp_path)
