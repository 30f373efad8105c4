"""``hostseal policy set|capture|assign`` against a real server process: a reason is required, and
the audit log says what each change loosened, with the old and new digests."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _service import Live, live_service

from ._softtpm import SoftTpm

STRICT = {
    "format": "hostseal-reference-policy",
    "version": 1,
    "require_secure_boot": True,
    "pcrs": {"sha256": {"7": "65" * 32}},
    "quote_pcrs": [0, 7],
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("policy-live") / "server"
    with live_service(data) as service:
        yield service


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _enrol(live: Live, name: str) -> None:
    """A host enrolled (pending approval is enough to hold a policy)."""
    tpm = SoftTpm()
    with live.http() as client:
        started = client.post(
            "/v1/enrol/start",
            json={
                "name": name,
                "ek_public": _b64(tpm.ek_public),
                "ek_certificate": None,
                "ak_public": _b64(tpm.ak_public),
            },
        ).json()
        secret = tpm.activate(
            base64.b64decode(started["credential_blob"]),
            base64.b64decode(started["encrypted_secret"]),
        )
        finished = client.post(
            "/v1/enrol/finish",
            json={"enrolment_id": started["enrolment_id"], "secret": _b64(secret)},
        )
        assert finished.status_code == 200, finished.text


def _audit(live: Live, action: str) -> list[dict[str, Any]]:
    with live.http(live.admin) as client:
        found: list[dict[str, Any]] = client.get("/v1/audit", params={"action": action}).json()
    return found


def _digest(live: Live, name: str) -> str:
    shown = live.cli_json(live.viewer, "policy", "show", name)
    assert isinstance(shown, dict)
    return str(shown["digest"])


def test_policy_commands_need_a_reason_and_audit_what_they_loosen(
    live: Live, tmp_path: Path
) -> None:
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps(STRICT))
    lax = tmp_path / "lax.json"
    lax_policy = {**STRICT, "require_secure_boot": False, "pcrs": {}, "quote_pcrs": [0, 7, 8]}
    lax.write_text(json.dumps({**lax_policy, "kernel_cmdline_required": ["ro"]}))

    for args in (
        ("policy", "set", "gold", str(strict)),
        ("policy", "capture", "gold", "--host", "esx1"),
        ("policy", "assign", "gold", "esx1"),
    ):
        refused = live.cli(live.operator, *args)
        assert refused.returncode == 2, refused.stderr
        assert "Missing option '--reason'" in refused.stderr
    blank = live.cli(live.operator, "policy", "set", "gold", str(strict), "--reason", " ")
    assert blank.returncode == 1
    assert "A reason is required to change the reference policy 'gold'" in blank.stderr
    assert _audit(live, "policy.set") == []

    made = live.cli(live.operator, "policy", "set", "gold", str(strict), "--reason", "baseline")
    assert made.returncode == 0, made.stderr
    first = _digest(live, "gold")
    weakened = live.cli(
        live.operator, "policy", "set", "gold", str(lax), "--reason", "esx1 debugging, INC-42"
    )
    assert weakened.returncode == 0, weakened.stderr
    second = _digest(live, "gold")
    edit, create = _audit(live, "policy.set")
    assert create["details"]["old_digest"] is None
    assert create["details"]["new_digest"] == first
    assert edit["who"] == "operator" and edit["reason"] == "esx1 debugging, INC-42"
    assert edit["details"]["old_digest"] == first
    assert edit["details"]["new_digest"] == second
    assert edit["details"]["summary"] == (
        "require_secure_boot: true → false; PCR 7 pin removed (sha256 656565656565…); "
        "kernel_cmdline_required: 'ro' now required; quote_pcrs: PCR 8 now quoted"
    )
    kinds = [c["kind"] for c in edit["details"]["changes"]]
    assert kinds == ["loosened", "loosened", "tightened", "tightened"]
    assert edit["details"]["loosened"] is True

    _enrol(live, "esx1")
    assigned = live.cli(live.operator, "policy", "assign", "gold", "esx1", "--reason", "rack 3")
    assert assigned.returncode == 0, assigned.stderr
    [assignment] = _audit(live, "policy.assigned")
    assert assignment["host"] == "esx1"
    assert assignment["reason"] == "rack 3"
    assert assignment["details"]["old"] is None
    assert assignment["details"]["new"] == {"name": "gold", "digest": second}

    history = live.cli_json(live.viewer, "policy", "history", "gold")
    assert isinstance(history, list)
    shown = live.cli(live.viewer, "policy", "history", "gold")
    assert shown.returncode == 0, shown.stderr
    assert "esx1 debugging, INC-42" in shown.stdout
    assert [(e["action"], e["reason"]) for e in history] == [
        ("policy.assigned", "rack 3"),
        ("policy.set", "esx1 debugging, INC-42"),
        ("policy.set", "baseline"),
    ]
