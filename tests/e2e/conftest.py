"""A real attestation service with lab hosts and real agents (hostseal.agent) attesting to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _service import LabFleet, live_service
from hostseal import lab
from hostseal.lab import LabHost


class Fleet(LabFleet):
    def add(self, name: str) -> LabHost:
        self.hosts[name] = lab.start(self.lab_dir, name)
        return self.hosts[name]

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
