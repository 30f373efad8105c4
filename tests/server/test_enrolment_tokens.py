"""Enrolment tokens (issue 12, item 2, optional): with HOSTSEAL_SERVER_ENROLMENT=token nobody
enrols without a token an admin made; a host token is for one name and used once, a batch token
for N new hosts; a token never lets an enrolment change an existing host."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from hostseal.server.clock import FixedClock
from hostseal.server.settings import ServerSettings, check_enrolment

from ._softtpm import SoftTpm
from .conftest import Server, b64, make_server


@pytest.fixture
def closed(settings: ServerSettings, clock: FixedClock) -> Iterator[Server]:
    server = make_server(replace(settings, enrolment="token"), clock)
    yield server
    server.ctx.close()


def _token(server: Server, **body: Any) -> str:
    made = server.api.post(
        "/v1/enrolment-tokens", token=server.admin, json={"reason": "rack 4", **body}
    )
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    return str(made.json()["token"])


def _enrol(server: Server, name: str, tpm: SoftTpm, token: str | None) -> Any:
    started = server.api.post(
        "/v1/enrol/start",
        json={
            "name": name,
            "ek_public": b64(tpm.ek_public),
            "ak_public": b64(tpm.ak_public),
            "enrolment_token": token,
        },
    )
    if started.status_code != 200:
        return started
    body = started.json()
    secret = tpm.activate(
        base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
    )
    return server.api.post(
        "/v1/enrol/finish", json={"enrolment_id": body["enrolment_id"], "secret": b64(secret)}
    )


def test_no_enrolment_without_a_token(closed: Server) -> None:
    refused = _enrol(closed, "host1", SoftTpm(), None)
    assert refused.status_code == 401
    body = refused.json()
    assert body["error"] == "EnrolmentTokenRefused"
    assert "enrols hosts only with an enrolment token" in body["message"]
    assert "--enrolment-token-file" in body["remedy"]
    assert _enrol(closed, "host1", SoftTpm(), "hse_not-one-of-ours").status_code == 401
    listed = closed.api.get("/v1/hosts", token=closed.viewer).json()
    assert listed == []


def test_a_host_token_enrols_that_name_once(closed: Server) -> None:
    viewer = closed.api.post(
        "/v1/enrolment-tokens", token=closed.operator, json={"host": "host1", "reason": "x"}
    )
    assert viewer.status_code == 403
    token = _token(closed, host="host1")
    other = _enrol(closed, "host2", SoftTpm(), token)
    assert (
        other.status_code == 401 and "is for host 'host1', not 'host2'" in other.json()["message"]
    )
    done = _enrol(closed, "host1", SoftTpm(), token)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "pending-approval"
    again = _enrol(closed, "host1", SoftTpm(), token)
    assert again.status_code == 401 and "used up" in again.json()["message"]
    [event] = closed.audit(action="enrolment-token.created")
    assert event["reason"] == "rack 4" and event["host"] == "host1"
    assert token not in str(event)


def test_a_batch_token_enrols_new_hosts_only(closed: Server) -> None:
    token = _token(closed, uses=2)
    first = SoftTpm()
    assert _enrol(closed, "a", first, token).status_code == 200
    known = _enrol(closed, "a", SoftTpm(), token)  # cannot touch an enrolled name
    assert known.status_code == 401 and "enrols new hosts only" in known.json()["message"]
    assert _enrol(closed, "b", SoftTpm(), token).status_code == 200
    assert _enrol(closed, "c", SoftTpm(), token).status_code == 401


def test_a_token_does_not_let_another_tpm_take_a_host(closed: Server) -> None:
    """With a host token, another TPM under an enrolled name is still only a request, and the
    token stays for that TPM's enrolment once the request is accepted."""
    tpm = SoftTpm()
    assert _enrol(closed, "host1", tpm, _token(closed, host="host1")).status_code == 200
    token = _token(closed, host="host1")
    new = SoftTpm()
    held = _enrol(closed, "host1", new, token)
    assert held.status_code == 409 and held.json()["error"] == "TpmChangeRequested"
    request = held.json()["request_id"]
    accepted = closed.api.post(
        f"/v1/hosts/host1/tpm-requests/{request}/accept",
        token=closed.operator,
        json={"reason": "board swap"},
    )
    assert accepted.status_code == 200
    replaced = _enrol(closed, "host1", new, token)
    assert replaced.status_code == 200 and replaced.json()["status"] == "pending-approval"


def test_token_bounds_and_the_setting(closed: Server) -> None:
    for body, field in (({"uses": 0}, "uses"), ({"hours": 721}, "hours"), ({"reason": ""}, "")):
        refused = closed.api.post(
            "/v1/enrolment-tokens", token=closed.admin, json={"reason": "r", **body}
        )
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["message"]
    with pytest.raises(Exception, match="is not an enrolment mode"):
        check_enrolment("closed")
