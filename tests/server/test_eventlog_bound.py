"""Stored event logs have a bound: a larger one is refused with 413 before anything is stored; the
default fits every real log of the corpus with room to spare."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hostseal.measure import EventLogError, parse_event_log
from hostseal.server.clock import FixedClock
from hostseal.server.settings import (
    DEFAULT_MAX_EVENTLOG,
    ServerSettings,
    ServerSettingsInvalid,
)

from ._softtpm import SoftTpm
from .conftest import Server, make_server

SMALL = 64 * 1024


@pytest.fixture
def small(settings: ServerSettings, clock: FixedClock) -> Iterator[Server]:
    srv = make_server(replace(settings, max_eventlog=SMALL), clock)
    yield srv
    srv.ctx.close()


def _agent(server: Server, tpm: SoftTpm) -> str:
    data = server.enrol("host1", tpm)
    approved = server.api.post(
        "/v1/hosts/host1/approve", token=server.operator, json={"reason": "lab host"}
    )
    assert approved.status_code == 200, approved.text
    return str(data["agent_token"])


def test_an_event_log_over_the_bound_is_refused_before_anything_is_stored(
    small: Server, tpm: SoftTpm
) -> None:
    agent = _agent(small, tpm)
    assert small.attest(agent, tpm)["status"] == "Warning"
    before = small.host("host1")
    audit = small.audit()

    padded = tpm.eventlog + b"\0" * (SMALL + 1 - len(tpm.eventlog))
    refused = small.evidence(agent, tpm, eventlog=padded)
    assert refused.status_code == 413, refused.text
    body = refused.json()
    assert body["error"] == "EventLogTooLarge"
    assert body["message"] == (
        f"The event log is {SMALL + 1} bytes, more than the {SMALL} bytes (64 KiB) this server "
        "stores per host; nothing of this evidence was stored."
    )
    assert "HOSTSEAL_SERVER_MAX_EVENTLOG" in body["remedy"]
    after = small.host("host1")
    assert after["verdicts"] == before["verdicts"]
    assert after["last_attested_at"] == before["last_attested_at"]
    assert small.audit() == audit

    # exactly at the bound is accepted (the padding is not an event log: the quote still is)
    at_bound = small.evidence(agent, tpm, eventlog=padded[:SMALL])
    assert at_bound.status_code != 413, at_bound.text


def test_the_bound_is_a_setting_with_a_documented_default() -> None:
    assert ServerSettings().max_eventlog == DEFAULT_MAX_EVENTLOG == 1024 * 1024
    env = {"HOSTSEAL_SERVER_MAX_EVENTLOG": "262144"}
    assert ServerSettings.from_env(env).max_eventlog == 262144
    with pytest.raises(ServerSettingsInvalid) as refused:
        ServerSettings.from_env({"HOSTSEAL_SERVER_MAX_EVENTLOG": "lots"})
    assert refused.value.message == "HOSTSEAL_SERVER_MAX_EVENTLOG='lots' is not a number of bytes."


def _corpus_logs() -> list[tuple[Path, int]]:
    root = Path(os.environ.get("HOSTSEAL_CORPUS", "/work/shared/realdata"))
    if not root.is_dir():
        pytest.skip(f"the corpus is not at {root} (set HOSTSEAL_CORPUS)")
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.suffix in (".json", ".yaml", ".txt", ".md", ".pem"):
            continue
        if path.stat().st_size > 4 * 1024 * 1024:
            continue
        try:
            parse_event_log(path.read_bytes())
        except (EventLogError, ValueError):
            continue
        found.append((path, path.stat().st_size))
    return found


def test_every_real_log_of_the_corpus_fits_ten_times_over() -> None:
    logs = _corpus_logs()
    assert len(logs) >= 10, logs
    largest = max(size for _, size in logs)
    assert largest * 10 < DEFAULT_MAX_EVENTLOG, max(logs, key=lambda item: item[1])
