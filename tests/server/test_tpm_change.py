"""Another TPM enrolling under a known host's name (issue 12, item 2).

An unauthenticated enrolment never changes an existing host: it becomes a TPM change request
beside the host, and only an operator's audited decision on that request replaces the EK. An EK
without a trusted vendor chain still waits for approval after that, and after a pre-planned
``reconnect`` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hostseal.server.clock import FixedClock
from hostseal.server.settings import ServerSettings

from ._softtpm import SoftTpm
from .conftest import Server, make_server
from .test_ekcert import _ek_certificate, _vendor_ca


def _approved(server: Server, name: str, tpm: SoftTpm) -> str:
    data = server.enrol(name, tpm)
    ok = server.api.post(
        f"/v1/hosts/{name}/approve", token=server.operator, json={"reason": "racked"}
    )
    assert ok.status_code == 200, ok.text
    return str(data["agent_token"])


def _request_of(server: Server, name: str) -> dict[str, Any]:
    [request] = [r for r in server.host(name)["tpm_change_requests"] if r["state"] == "open"]
    return request


def test_another_tpm_under_a_known_name_changes_nothing(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    server.attest(agent, tpm)
    before = server.host("host1")
    attacker = SoftTpm()
    held = server.enrol("host1", attacker, expect=409)
    assert held["error"] == "TpmChangeRequested"
    request = _request_of(server, "host1")
    assert f"request {request['id']}" in held["message"]
    assert "not enrolled" in held["message"] and "keeps its enrolled TPM" in held["message"]
    assert f"hostseal host accept-tpm host1 --request {request['id']} --reason" in held["remedy"]
    assert "reject-tpm" in held["remedy"]

    after = server.host("host1")
    for key in ("status", "ek", "ak", "enrolled_at", "reconnect_allowed"):
        assert after[key] == before[key], key
    assert after["status"] == before["status"] != "tpm-changed"
    assert after["ek"]["fingerprint"] == before["ek"]["fingerprint"]
    assert after["ak"] == before["ak"]
    # the real agent keeps its token and keeps attesting
    assert server.attest(agent, tpm)["status"] in ("Passed", "Warning")

    assert request["old_ek_fingerprint"] == before["ek"]["fingerprint"]
    assert request["new_ek_fingerprint"] != before["ek"]["fingerprint"]
    assert request["trusted_chain"] is False and request["vendor"] is None
    assert request["address"] == "127.0.0.1"
    assert request["requested_at"] and request["state"] == "open"
    [event] = server.audit(action="host.tpm-change-requested")
    assert event["details"]["new_ek_fingerprint"] == request["new_ek_fingerprint"]
    assert event["details"]["address"] == "127.0.0.1"


def test_requests_are_bounded_per_ek_and_per_name(server: Server, tpm: SoftTpm, agent: str) -> None:
    attacker = SoftTpm()
    first = server.enrol("host1", attacker, expect=409)
    again = server.enrol("host1", attacker, expect=409)  # the same EK: the same request
    assert first["request_id"] == again["request_id"]
    for _ in range(4):
        server.enrol("host1", SoftTpm(), expect=409)
    assert len(server.host("host1")["tpm_change_requests"]) == 5
    full = server.enrol("host1", SoftTpm(), expect=429)
    assert full["error"] == "TooManyTpmChangeRequests"
    assert "5 open TPM change requests" in full["message"]
    assert "reject-tpm" in full["remedy"]
    assert len(server.host("host1")["tpm_change_requests"]) == 5


def test_accept_replaces_the_tpm_only_after_a_decision_and_approval(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    old = server.host("host1")["ek"]["fingerprint"]
    new_tpm = SoftTpm()
    server.enrol("host1", new_tpm, expect=409)
    request = _request_of(server, "host1")
    path = f"/v1/hosts/host1/tpm-requests/{request['id']}"
    no_reason = server.api.post(f"{path}/accept", token=server.operator, json={})
    assert no_reason.status_code == 422
    viewer = server.api.post(f"{path}/accept", token=server.viewer, json={"reason": "x"})
    assert viewer.status_code == 403
    accepted = server.api.post(
        f"{path}/accept", token=server.operator, json={"reason": "board swap, ticket 4711"}
    )
    assert accepted.status_code == 200, accepted.text
    # accepting changes no identity yet: the old TPM keeps the host until the new one enrols
    assert server.host("host1")["ek"]["fingerprint"] == old
    [event] = server.audit(action="host.tpm-change-accepted")
    assert event["reason"] == "board swap, ticket 4711"
    assert event["details"]["old_ek_fingerprint"] == old
    assert event["details"]["new_ek_fingerprint"] == request["new_ek_fingerprint"]
    # another TPM is still only a request
    assert server.enrol("host1", SoftTpm(), expect=409)["error"] == "TpmChangeRequested"

    data = server.enrol("host1", new_tpm)
    assert data["status"] == "pending-approval"  # no vendor chain: approval still needed
    host = server.host("host1")
    assert host["ek"]["fingerprint"] == request["new_ek_fingerprint"]
    assert host["status"] == "pending-approval"
    refused = server.api.post("/v1/attest/challenge", token=data["agent_token"], json={})
    assert refused.status_code == 403
    assert server.api.post("/v1/attest/challenge", token=agent, json={}).status_code == 401
    replaced = server.audit(action="host.tpm-replaced")[0]
    assert replaced["details"]["old_ek_fingerprint"] == old
    ok = server.api.post(
        "/v1/hosts/host1/approve", token=server.operator, json={"reason": "EK checked"}
    )
    assert ok.status_code == 200
    assert server.challenge(data["agent_token"])["nonce"]


def test_reject_closes_the_request_and_keeps_the_host(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    attacker = SoftTpm()
    server.enrol("host1", attacker, expect=409)
    request = _request_of(server, "host1")
    path = f"/v1/hosts/host1/tpm-requests/{request['id']}"
    rejected = server.api.post(f"{path}/reject", token=server.operator, json={"reason": "not ours"})
    assert rejected.status_code == 200, rejected.text
    [event] = server.audit(action="host.tpm-change-rejected")
    assert event["reason"] == "not ours"
    shown = server.host("host1")["tpm_change_requests"]
    assert [r["state"] for r in shown] == ["rejected"]
    again = server.api.post(f"{path}/accept", token=server.operator, json={"reason": "oops"})
    assert again.status_code == 409
    assert "is rejected" in again.json()["message"]
    # the rejected EK asking again is refused without a new row
    refused = server.enrol("host1", attacker, expect=409)
    assert refused["error"] == "TpmChangeRejected"
    assert len(server.host("host1")["tpm_change_requests"]) == 1
    assert server.attest(agent, tpm)["status"] in ("Passed", "Warning")


def test_planned_reconnect_still_needs_approval_without_a_vendor_chain(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    reconnect = server.api.post(
        "/v1/hosts/host1/reconnect", token=server.operator, json={"reason": "board swap planned"}
    )
    assert reconnect.status_code == 200
    data = server.enrol("host1", SoftTpm())
    assert data["status"] == "pending-approval"
    assert server.host("host1")["status"] == "pending-approval"


def test_accepted_trusted_tpm_enrols_directly_and_shows_its_vendor(
    tmp_path: Path, clock: FixedClock
) -> None:
    store = tmp_path / "tpm-ca"
    ca, ca_key = _vendor_ca(store)
    server = make_server(ServerSettings(data_dir=tmp_path / "s", trust_store=store), clock)
    try:
        old = SoftTpm()
        server.enrol("host1", old, certificate=_ek_certificate(ca, ca_key, old.ek))
        new = SoftTpm()
        certificate = _ek_certificate(ca, ca_key, new.ek)
        server.enrol("host1", new, expect=409, certificate=certificate)
        request = _request_of(server, "host1")
        assert request["trusted_chain"] is True
        path = f"/v1/hosts/host1/tpm-requests/{request['id']}/accept"
        ok = server.api.post(path, token=server.operator, json={"reason": "board swap"})
        assert ok.status_code == 200, ok.text
        assert server.enrol("host1", new, certificate=certificate)["status"] == "enrolled"
    finally:
        server.ctx.close()
