"""Removing a host (issue 12, item 8): a reason is required, the host becomes a tombstone whose
verdicts and alarms stay viewable, its agent tokens are revoked, and the name can enrol again as
a new host."""

from __future__ import annotations

from datetime import timedelta

from hostseal.lab import BootConfig

from ._softtpm import SoftTpm
from .conftest import Server


def _failing_host_with_an_alarm(server: Server, tpm: SoftTpm, agent: str) -> None:
    server.attest(agent, tpm)
    captured = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "gold", "host": "host1", "reason": "golden image"},
    )
    assert captured.status_code == 200, captured.text
    assert server.attest(agent, tpm)["status"] == "Passed"
    tpm.reboot(BootConfig(secure_boot=False))
    server.clock.advance(timedelta(minutes=5))
    assert server.attest(agent, tpm)["status"] == "Failed"
    assert len(server.alarms(state="active")) == 1


def test_remove_requires_a_reason(server: Server, agent: str) -> None:
    for params in (None, {"reason": ""}, {"reason": "   "}):
        refused = server.api.delete("/v1/hosts/host1", token=server.operator, params=params)
        assert refused.status_code == 422, refused.text
        assert refused.json()["message"].startswith("A reason is required to remove a host")
    assert server.host("host1")["status"] == "enrolled"
    assert server.audit(action="host.removed") == []


def test_removed_host_keeps_its_history_and_leaves_the_fleet(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    server.api.post("/v1/hosts/host1/approve", token=server.operator, json={"reason": "ok"})
    _failing_host_with_an_alarm(server, tpm, agent)
    fingerprint = server.host("host1")["ek"]["fingerprint"]
    removed = server.api.delete(
        "/v1/hosts/host1", token=server.operator, params={"reason": "decommissioned, CHG-12"}
    )
    assert removed.status_code == 200, removed.text
    [event] = server.audit(action="host.removed")
    assert event["who"] == "operator-1" and event["reason"] == "decommissioned, CHG-12"
    assert event["details"]["ek_fingerprint"] == fingerprint
    assert event["details"]["status"] == "failed"
    assert event["details"]["verdicts_kept"] == 3
    # the agent's token no longer works
    assert server.api.post("/v1/attest/challenge", token=agent, json={}).status_code == 401

    # out of the fleet: the host list, the alarm list and the metrics
    listed = server.api.get("/v1/hosts", token=server.viewer).json()
    assert [h["name"] for h in listed] == []
    assert server.alarms() == []
    metrics = server.api.get("/metrics", token=server.viewer).text
    assert 'hostseal_hosts{status="failed"} 0' in metrics

    # but kept: a removed host is shown with its verdicts and alarms
    tombstones = server.api.get("/v1/hosts", token=server.viewer, params={"removed": "true"})
    [tomb] = tombstones.json()
    assert tomb["name"] == "host1" and tomb["status"] == "removed"
    assert tomb["removed"]["reason"] == "decommissioned, CHG-12"
    assert tomb["removed"]["by"] == "operator-1"
    shown = server.host("host1")
    assert shown["status"] == "removed"
    assert [v["status"] for v in shown["verdicts"]] == ["Failed", "Passed", "Warning"]
    [alarm] = server.alarms(removed="true")
    assert alarm["host"] == "host1" and alarm["state"] == "raised"

    # removing again: there is no such host any more
    again = server.api.delete("/v1/hosts/host1", token=server.operator, params={"reason": "x"})
    assert again.status_code == 404


def test_the_name_can_enrol_again_as_a_new_host(server: Server, tpm: SoftTpm, agent: str) -> None:
    server.attest(agent, tpm)
    removed = server.api.delete("/v1/hosts/host1", token=server.operator, params={"reason": "rma"})
    assert removed.status_code == 200
    # the same TPM may come back under the name, and a new TPM may take the name
    data = server.enrol("host1", tpm)
    assert data["status"] == "pending-approval"
    fresh = server.host("host1")
    assert fresh["status"] == "pending-approval"
    assert fresh.get("verdicts") == []
    tombstones = server.api.get("/v1/hosts", token=server.viewer, params={"removed": "true"})
    assert [t["name"] for t in tombstones.json()] == ["host1"]
    # and removed again: two tombstones under one name
    server.api.delete("/v1/hosts/host1", token=server.operator, params={"reason": "again"})
    tombstones = server.api.get("/v1/hosts", token=server.viewer, params={"removed": "true"})
    assert len(tombstones.json()) == 2
    assert server.enrol("host2", SoftTpm())["status"] == "pending-approval"
