"""Tokens and roles, errors, alarms by hand, policies, metrics, the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hostseal.lab import BootConfig

from ._softtpm import SoftTpm
from .conftest import Server

USER_READS = ["/v1/hosts", "/v1/alarms", "/v1/policies"]


@pytest.mark.parametrize("path", USER_READS)
def test_no_token_is_401_with_what_to_do(server: Server, path: str) -> None:
    response = server.api.get(path)
    assert response.status_code == 401
    body = response.json()
    assert body == {
        "error": "Unauthenticated",
        "message": "This request needs a token: send 'Authorization: Bearer <token>'.",
        "remedy": "Create a token on the server with 'hostseal server token create --role "
        "viewer --name NAME' and pass it in HOSTSEAL_TOKEN.",
    }
    unknown = server.api.get(path, token="hst_nope")
    assert unknown.status_code == 401
    assert "not known to this server" in unknown.json()["message"]


ROLE_TABLE: dict[str, tuple[str, str, dict[str, Any] | None, str]] = {
    # name: (method, path, body, minimum role)
    "list hosts": ("GET", "/v1/hosts", None, "viewer"),
    "list alarms": ("GET", "/v1/alarms", None, "viewer"),
    "list policies": ("GET", "/v1/policies", None, "viewer"),
    "approve": ("POST", "/v1/hosts/host1/approve", {"reason": "r"}, "operator"),
    "reconnect": ("POST", "/v1/hosts/host1/reconnect", {"reason": "r"}, "operator"),
    "accept tpm": ("POST", "/v1/hosts/host1/tpm-requests/1/accept", {"reason": "r"}, "operator"),
    "reject tpm": ("POST", "/v1/hosts/host1/tpm-requests/1/reject", {"reason": "r"}, "operator"),
    "remove host": ("DELETE", "/v1/hosts/host1", None, "operator"),
    "removed hosts": ("GET", "/v1/hosts?removed=true", None, "viewer"),
    "enrolment token": ("POST", "/v1/enrolment-tokens", {"reason": "r"}, "admin"),
    "set policy": ("PUT", "/v1/policies/p", {}, "operator"),
    "read escrow": ("GET", "/v1/escrow/host1", None, "admin"),
    "export escrow": ("GET", "/v1/escrow", None, "admin"),
    "audit log": ("GET", "/v1/audit", None, "admin"),
}


@pytest.mark.parametrize("case", ROLE_TABLE)
def test_roles(server: Server, case: str) -> None:
    method, path, body, minimum = ROLE_TABLE[case]
    ranks = ["viewer", "operator", "admin"]
    for role in ranks:
        token = getattr(server, role)
        response = server.api.request(method, path, token=token, json=body)
        if ranks.index(role) < ranks.index(minimum):
            assert response.status_code == 403, (role, response.text)
            assert f"Only the {minimum} role may" in response.json()["message"]
        else:
            assert response.status_code != 403, (role, response.text)
            assert response.status_code != 401


def test_agent_tokens_only_work_on_agent_endpoints(server: Server, agent: str) -> None:
    response = server.api.get("/v1/hosts", token=agent)
    assert response.status_code == 403
    assert "agent tokens are accepted only by the agent endpoints" in response.json()["message"]
    user = server.api.post("/v1/attest/challenge", token=server.admin, json={})
    assert user.status_code == 403
    assert user.json()["message"].startswith("Only a host's agent may call this endpoint")


def test_unknown_route_and_method_answer_json(server: Server) -> None:
    missing = server.api.get("/v1/nothing", token=server.viewer)
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFound"
    wrong = server.api.request("PATCH", "/v1/hosts", token=server.viewer)
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "MethodNotAllowed"


def test_attestation_alarm_ack_and_reset_by_hand(server: Server, tpm: SoftTpm, agent: str) -> None:
    server.attest(agent, tpm)
    server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "gold", "host": "host1", "reason": "golden"},
    )
    tpm.reboot(BootConfig(secure_boot=False))
    server.attest(agent, tpm)
    [alarm] = server.alarms()
    path = f"/v1/alarms/{alarm['id']}"
    assert server.api.post(f"{path}/ack", token=server.viewer, json={}).status_code == 403
    refused = server.api.post(f"{path}/reset", token=server.operator, json={"comment": "fixed"})
    assert refused.status_code == 409
    assert refused.json()["message"].startswith(
        "The Host TPM attestation alarm of host 'host1' cannot be reset by hand while its "
        "condition holds: the last attestation of host 'host1' failed ("
    )
    assert "next attestation passes" in refused.json()["remedy"]

    # a Warning after the failure: the condition (a failed attestation) is gone
    server.api.put(
        "/v1/hosts/host1/policy", token=server.operator, json={"policy": None, "reason": "r"}
    )
    assert server.attest(agent, tpm)["status"] == "Warning"
    reset = server.api.post(f"{path}/reset", token=server.operator, json={"comment": "reviewed"})
    assert reset.status_code == 200
    body = reset.json()
    assert body["state"] == "cleared"
    assert body["history"][-1] == {
        "at": server.clock.now().isoformat(),
        "event": "reset",
        "who": "operator-1",
        "comment": "reviewed",
    }
    again = server.api.post(f"{path}/reset", token=server.operator, json={})
    assert again.status_code == 409
    assert server.api.post(f"{path}/ack", token=server.operator, json={}).status_code == 409
    assert server.api.post("/v1/alarms/999/ack", token=server.operator, json={}).status_code == 404


EMPTY_POLICIES = {
    "empty object": {},
    "no rules": {"format": "hostseal-reference-policy", "version": 1, "quote_pcrs": [0]},
}


@pytest.mark.parametrize("case", EMPTY_POLICIES)
def test_policy_put_refuses_an_empty_policy(server: Server, case: str) -> None:
    response = server.api.put(
        "/v1/policies/lax",
        token=server.operator,
        json=EMPTY_POLICIES[case],
        params={"reason": "test"},
    )
    assert response.status_code == 422
    message = response.json()["message"]
    assert "would accept every host" in message or "every host would pass it" in message
    assert server.api.get("/v1/policies", token=server.viewer).json() == []


def test_policy_put_show_list_assign(server: Server, tpm: SoftTpm, agent: str) -> None:
    document = {
        "format": "hostseal-reference-policy",
        "version": 1,
        "require_secure_boot": True,
        "quote_pcrs": [0, 7],
    }
    put = server.api.put(
        "/v1/policies/sb-only", token=server.operator, json=document, params={"reason": "r"}
    )
    assert put.status_code == 200, put.text
    assert put.json()["pcrs"] == [0, 7]
    assert put.json()["policy"]["name"] == "sb-only"
    mismatch = server.api.put(
        "/v1/policies/other",
        token=server.operator,
        json={**document, "name": "x"},
        params={"reason": "r"},
    )
    assert mismatch.status_code == 422
    listed = server.api.get("/v1/policies", token=server.viewer).json()
    assert [p["name"] for p in listed] == ["sb-only"]
    assert server.api.get("/v1/policies/none", token=server.viewer).status_code == 404
    unknown = server.api.put(
        "/v1/hosts/host1/policy", token=server.operator, json={"policy": "nope", "reason": "r"}
    )
    assert unknown.status_code == 404
    assigned = server.api.put(
        "/v1/hosts/host1/policy", token=server.operator, json={"policy": "sb-only", "reason": "r"}
    )
    assert assigned.json()["policy"] == "sb-only"
    assert server.challenge(agent)["pcrs"] == [0, 7]
    assert server.attest(agent, tpm)["status"] == "Passed"
    shown = server.api.get("/v1/policies/sb-only", token=server.viewer).json()
    assert shown["hosts"] == ["host1"]
    assert server.audit(action="policy.assigned")[0]["details"]["policy"] == "sb-only"


def test_capture_needs_verified_evidence(server: Server, agent: str) -> None:
    response = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "g", "host": "host1", "reason": "r"},
    )
    assert response.status_code == 409
    assert "has sent no verified quote" in response.json()["message"]


def test_metrics(server: Server, tpm: SoftTpm, agent: str) -> None:
    server.attest(agent, tpm)
    server.enrol("host2", SoftTpm())
    response = server.api.get("/metrics", token=server.viewer)  # a token by default (item 16)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert 'hostseal_hosts{status="warning"} 1' in lines
    assert 'hostseal_hosts{status="pending-approval"} 1' in lines
    assert 'hostseal_hosts{status="failed"} 0' in lines
    assert 'hostseal_verdicts_total{status="Warning"} 1' in lines
    assert 'hostseal_alarms_raised{kind="host-tpm-attestation"} 0' in lines
    assert "# TYPE hostseal_verdicts_total counter" in lines


def test_openapi_document(server: Server) -> None:
    response = server.api.get("/v1/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/v1/enrol/start",
        "/v1/enrol/finish",
        "/v1/attest/challenge",
        "/v1/attest/evidence",
        "/v1/escrow",
        "/v1/hosts/{name}/reconnect",
        "/v1/hosts/{name}/tpm-requests/{request_id}/accept",
        "/v1/hosts/{name}/tpm-requests/{request_id}/reject",
        "/v1/alarms/{alarm_id}/reset",
        "/v1/policies/capture",
        "/v1/escrow/{host}",
        "/v1/audit",
    ):
        assert path in paths, path
    json.dumps(response.json())


def test_hosts_list_shows_what_operators_need(server: Server, tpm: SoftTpm, agent: str) -> None:
    server.attest(agent, tpm)
    [host] = server.api.get("/v1/hosts", token=server.viewer).json()
    assert host["name"] == "host1"
    assert host["status"] == "warning"
    assert host["message"].startswith("No reference policy")
    assert host["ek"]["fingerprint"] and host["ek"]["trusted_chain"] is False
    assert host["ak"]["name"] == tpm.ak_name.hex()
    assert "verdicts" not in host
