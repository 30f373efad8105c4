"""Enrolment: credential activation, EK policy, approval, a changed TPM and its request."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

from hostseal.server.clock import FixedClock
from hostseal.server.settings import ServerSettings

from ._softtpm import AK_ATTRIBUTES, SoftTpm, ak_tpmt_public, b2
from .conftest import Server, b64, make_server


def test_new_host_without_trusted_chain_waits_for_approval(server: Server, tpm: SoftTpm) -> None:
    data = server.enrol("host1", tpm)
    assert data["host"] == "host1"
    assert data["status"] == "pending-approval"
    agent = data["agent_token"]
    refused = server.api.post("/v1/attest/challenge", token=agent, json={})
    assert refused.status_code == 403
    assert refused.json()["error"] == "HostNotTrusted"
    assert "waits for approval" in refused.json()["message"]

    no_reason = server.api.post("/v1/hosts/host1/approve", token=server.operator, json={})
    assert no_reason.status_code == 422
    assert no_reason.json()["message"].startswith("A reason is required to approve a host")
    viewer = server.api.post("/v1/hosts/host1/approve", token=server.viewer, json={"reason": "x"})
    assert viewer.status_code == 403
    ok = server.api.post(
        "/v1/hosts/host1/approve", token=server.operator, json={"reason": "racked by Ann"}
    )
    assert ok.status_code == 200
    assert ok.json()["status"] == "enrolled"
    events = server.audit(action="host.approved")
    assert events[0]["who"] == "operator-1"
    assert events[0]["reason"] == "racked by Ann"
    assert events[0]["host"] == "host1"
    assert server.challenge(agent)["nonce"]

    again = server.api.post(
        "/v1/hosts/host1/approve", token=server.operator, json={"reason": "again"}
    )
    assert again.status_code == 409


def test_require_chain_refuses_an_ek_without_trusted_certificate(
    tmp_path: Path, clock: FixedClock, tpm: SoftTpm
) -> None:
    settings = ServerSettings(data_dir=tmp_path / "s", ek_policy="require-chain")
    server = make_server(settings, clock)
    try:
        response = server.enrol_start("host1", tpm)
        assert response.status_code == 403
        body = response.json()
        assert body["error"] == "EkNotTrusted"
        assert "require-chain" in body["message"]
        assert "sent no EK certificate" in body["message"]
        assert str(settings.trust_store_dir) in body["remedy"]
    finally:
        server.ctx.close()


def test_wrong_secret_is_refused_and_the_enrolment_is_single_use(
    server: Server, tpm: SoftTpm
) -> None:
    body = server.enrol_start("host1", tpm).json()
    wrong = server.api.post(
        "/v1/enrol/finish", json={"enrolment_id": body["enrolment_id"], "secret": b64(bytes(32))}
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "CredentialActivationFailed"
    secret = tpm.activate(
        base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
    )
    reused = server.api.post(
        "/v1/enrol/finish", json={"enrolment_id": body["enrolment_id"], "secret": b64(secret)}
    )
    assert reused.status_code == 409
    assert reused.json()["error"] == "EnrolmentUsed"
    unknown = server.api.post(
        "/v1/enrol/finish", json={"enrolment_id": "nope", "secret": b64(secret)}
    )
    assert unknown.status_code == 404


def test_an_ak_in_another_tpm_cannot_activate(server: Server, tpm: SoftTpm) -> None:
    """The credential is bound to the AK's name: a TPM that holds the EK but reports another
    AK cannot return the secret."""
    other = SoftTpm(ek=tpm.ek)
    body = server.enrol_start("host1", tpm).json()
    try:
        other.activate(
            base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
        )
    except ValueError as exc:
        assert "integrity" in str(exc)
    else:
        raise AssertionError("activation with another AK name succeeded")


def test_enrolment_expires(server: Server, clock: FixedClock, tpm: SoftTpm) -> None:
    body = server.enrol_start("host1", tpm).json()
    secret = tpm.activate(
        base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
    )
    clock.advance(timedelta(seconds=301))
    late = server.api.post(
        "/v1/enrol/finish", json={"enrolment_id": body["enrolment_id"], "secret": b64(secret)}
    )
    assert late.status_code == 409
    assert late.json()["error"] == "EnrolmentExpired"


def test_an_ak_that_is_not_a_restricted_signing_key_is_refused(
    server: Server, tpm: SoftTpm
) -> None:
    unrestricted = b2(ak_tpmt_public(tpm.ak, attributes=AK_ATTRIBUTES & ~0x00010000))
    response = server.api.post(
        "/v1/enrol/start",
        json={"name": "h", "ek_public": b64(tpm.ek_public), "ak_public": b64(unrestricted)},
    )
    assert response.status_code == 422
    assert "restricted signing key" in response.json()["message"]


def test_bad_input_is_refused_with_a_message(server: Server, tpm: SoftTpm) -> None:
    bad_name = server.api.post(
        "/v1/enrol/start",
        json={"name": "../etc", "ek_public": b64(tpm.ek_public), "ak_public": b64(tpm.ak_public)},
    )
    assert bad_name.status_code == 422
    assert "is not a host name" in bad_name.json()["message"]
    not_b64 = server.api.post(
        "/v1/enrol/start", json={"name": "h", "ek_public": "***", "ak_public": "***"}
    )
    assert not_b64.status_code == 422
    assert not_b64.json()["message"] == (
        "The field 'ek_public' is not base64 (standard alphabet, padded)."
    )
    missing = server.api.post("/v1/enrol/start", json={"name": "h"})
    assert missing.status_code == 422
    assert missing.json()["error"] == "RequestInvalid"
    assert "ek_public" in missing.json()["message"]


def test_changed_tpm_is_a_request_until_accepted(server: Server, tpm: SoftTpm, agent: str) -> None:
    """A new TPM under a known name: a request, the host unchanged; accepted (audited), the new
    TPM enrols and (no vendor chain) waits for approval. The old agent token is revoked."""
    old = server.host("host1")["ek"]["fingerprint"]
    new_tpm = SoftTpm()
    changed = server.enrol("host1", new_tpm, expect=409)
    assert changed["error"] == "TpmChangeRequested"
    assert old in changed["message"]
    assert "accept-tpm host1 --request" in changed["remedy"]
    host = server.host("host1")
    assert host["status"] == "enrolled"
    assert host["ek"]["fingerprint"] == old and host["ek"]["new_fingerprint"] is None
    new = changed["new_ek_fingerprint"]
    assert new and new != old and changed["old_ek_fingerprint"] == old
    # the old agent keeps attesting while the request waits
    assert server.challenge(agent)["nonce"]
    # enrolling again gives the same request
    assert server.enrol("host1", new_tpm, expect=409)["request_id"] == changed["request_id"]

    accepted = server.api.post(
        f"/v1/hosts/host1/tpm-requests/{changed['request_id']}/accept",
        token=server.operator,
        json={"reason": "system board replaced, ticket 4711"},
    )
    assert accepted.status_code == 200
    assert accepted.json()["reconnect_allowed"] is True
    assert accepted.json()["ek"]["new_fingerprint"] == new
    event = server.audit(action="host.tpm-change-accepted")[0]
    assert event["reason"] == "system board replaced, ticket 4711"
    assert event["details"]["new_ek_fingerprint"] == new

    data = server.enrol("host1", new_tpm)
    assert data["status"] == "pending-approval"
    host = server.host("host1")
    assert host["ek"]["fingerprint"] == new
    assert host["ek"]["new_fingerprint"] is None
    assert host["reconnect_allowed"] is False
    replaced = server.audit(action="host.tpm-replaced")[0]
    assert replaced["details"]["old_ek_fingerprint"] == old
    # the old agent token was revoked; the new one waits for approval
    assert server.api.post("/v1/attest/challenge", token=agent, json={}).status_code == 401
    server.api.post("/v1/hosts/host1/approve", token=server.operator, json={"reason": "checked"})
    assert server.challenge(data["agent_token"])["nonce"]


def test_accepting_a_request_lets_only_its_ek_in(server: Server, tpm: SoftTpm, agent: str) -> None:
    request = server.enrol("host1", SoftTpm(), expect=409)["request_id"]
    server.api.post(
        f"/v1/hosts/host1/tpm-requests/{request}/accept",
        token=server.operator,
        json={"reason": "swap"},
    )
    intruder = server.enrol("host1", SoftTpm(), expect=409)
    assert intruder["error"] == "TpmChangeRequested"
    assert intruder["request_id"] != request


def test_same_tpm_enrols_again_with_a_new_ak(server: Server, tpm: SoftTpm, agent: str) -> None:
    again = SoftTpm(ek=tpm.ek)
    data = server.enrol("host1", again)
    assert data["status"] == "enrolled"
    assert server.host("host1")["ak"]["name"] == again.ak_name.hex()
    assert server.api.post("/v1/attest/challenge", token=agent, json={}).status_code == 401


def test_one_tpm_cannot_be_two_hosts(server: Server, tpm: SoftTpm, agent: str) -> None:
    clone = server.enrol("host2", tpm, expect=409)
    assert "already enrolled as host 'host1'" in clone["message"]


def test_remove_keeps_an_audit_record(server: Server, agent: str) -> None:
    viewer = server.api.delete("/v1/hosts/host1", token=server.viewer)
    assert viewer.status_code == 403
    response = server.api.delete(
        "/v1/hosts/host1", token=server.operator, params={"reason": "decommissioned"}
    )
    assert response.status_code == 200
    assert server.host("host1")["status"] == "removed"  # kept: tests/server/test_host_removal.py
    event = server.audit(action="host.removed")[0]
    assert event["reason"] == "decommissioned"
    assert server.api.post("/v1/attest/challenge", token=agent, json={}).status_code == 401
