"""Issue 12 item 7: refused nonces cannot grow the audit log without bound. The first refusal
of a kind per host is audited at once; the rest of the interval is counted and written as one
aggregate row; /metrics counts every refusal."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hostseal.server.http.app import run_housekeeping

from ._softtpm import SoftTpm
from .conftest import Server

REPLAYS = 1000


def _refused(server: Server) -> list[dict[str, Any]]:
    return server.audit(action="attest.refused", limit="5000")


def test_a_thousand_replayed_nonces_write_a_bounded_number_of_audit_rows(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    challenge = server.challenge(agent)
    assert server.evidence(agent, tpm, challenge=challenge).status_code == 200
    for _ in range(REPLAYS):
        replay = server.evidence(agent, tpm, challenge=challenge)
        assert replay.status_code == 409
        assert replay.json()["error"] == "NonceReplayed"
    [first] = _refused(server)  # the first at once, the others counted
    assert first["host"] == "host1"
    assert first["details"]["error"] == "NonceReplayed"
    assert first["reason"].startswith(f"The nonce {challenge['nonce'][:16]}... was already used")

    # every refusal is counted in /metrics
    metrics = server.api.get("/metrics", token=server.viewer).text.splitlines()
    assert f'hostseal_attest_refusals_total{{error="NonceReplayed"}} {REPLAYS}' in metrics

    # after the interval, the rest is one aggregate row
    server.clock.advance(timedelta(minutes=11))
    run_housekeeping(server.ctx)
    rows = _refused(server)
    assert len(rows) == 2
    aggregate = rows[0]
    assert aggregate["host"] == "host1"
    assert aggregate["details"]["error"] == "NonceReplayed"
    assert aggregate["details"]["count"] == REPLAYS - 1
    assert aggregate["details"]["aggregated"] is True
    assert aggregate["reason"] == (
        f"{REPLAYS - 1} more refusals of this host's evidence (NonceReplayed) since the first "
        "was audited."
    )
    run_housekeeping(server.ctx)
    assert len(_refused(server)) == 2  # nothing more to write

    # a new interval: its first refusal is audited at once again
    server.evidence(agent, tpm, challenge=challenge)
    assert len(_refused(server)) == 3
