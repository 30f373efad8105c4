"""Shared fixtures: the external corpus and software TPMs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hostseal.lab import LabHost

REPO = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    """``HOSTSEAL_CORPUS``, default ``../shared/realdata`` next to the repository."""
    return Path(os.environ.get("HOSTSEAL_CORPUS") or REPO.parent / "shared" / "realdata")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The external test corpus; tests that need it skip, saying why, when it is absent."""
    path = corpus_dir()
    if not (path / "MANIFEST.md").is_file():
        if os.environ.get("HOSTSEAL_REQUIRE_CORPUS"):
            pytest.fail(
                f"external test corpus required (HOSTSEAL_REQUIRE_CORPUS) but not at {path}"
            )
        pytest.skip(
            f"external test corpus not found at {path}: set HOSTSEAL_CORPUS to the realdata folder"
        )
    return path


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    """A lab directory of its own; every lab host started in it is stopped afterwards."""
    from hostseal import lab

    path = tmp_path / "lab"
    path.mkdir()
    yield path
    for host in lab.list_hosts(path):
        lab.stop(path, host.name)


@pytest.fixture
def lab_host(lab_dir: Path) -> LabHost:
    """A running lab host with Secure Boot on."""
    from hostseal import lab

    return lab.start(lab_dir, "host1")


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """A private PostgreSQL server for the test session (``scale.postgres.PostgresCluster``):
    initdb in a temporary directory, a free 127.0.0.1 port, fsync off. Skips, saying why, when
    the PostgreSQL binaries or psycopg are absent (``HOSTSEAL_REQUIRE_POSTGRES`` makes it fail)."""
    from scale.postgres import PostgresCluster, unavailable

    why = unavailable()
    if why is not None:
        if os.environ.get("HOSTSEAL_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required (HOSTSEAL_REQUIRE_POSTGRES) but: {why}")
        pytest.skip(f"PostgreSQL variant skipped: {why}")
    cluster = PostgresCluster().init()
    yield cluster
    cluster.close()
