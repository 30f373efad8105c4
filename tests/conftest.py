"""Shared fixtures: the external corpus and software TPMs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
            pytest.fail(f"external test corpus required (HOSTSEAL_REQUIRE_CORPUS) but not at {path}")
        pytest.skip(
            f"external test corpus not found at {path}: set HOSTSEAL_CORPUS to the realdata folder"
        )
    return path
