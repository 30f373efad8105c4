"""Weakening is loud: every policy change states a reason, and its audit entry keeps the old and
new digests and what was loosened or tightened, field by field."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from hostseal.lab import BootConfig

from ._softtpm import SoftTpm
from .conftest import Server

STRICT = {
    "format": "hostseal-reference-policy",
    "version": 1,
    "require_secure_boot": True,
    "kernel_cmdlines": ["BOOT_IMAGE=/vmlinuz ro quiet"],
    "quote_pcrs": [0, 7, 8],
}
REASON_MESSAGE = "A reason is required to "


def _digest(server: Server, name: str) -> str:
    shown = server.api.get(f"/v1/policies/{name}", token=server.viewer).json()
    return str(shown["digest"])


def _put(server: Server, name: str, document: dict[str, Any], reason: str | None) -> Any:
    params = {"reason": reason} if reason is not None else None
    return server.api.put(
        f"/v1/policies/{name}", token=server.operator, json=document, params=params
    )


CHANGES_WITHOUT_REASON = {
    "set": ("PUT", "/v1/policies/gold", STRICT),
    "set, blank reason": ("PUT", "/v1/policies/gold?reason=%20%20", STRICT),
    "capture": ("POST", "/v1/policies/capture", {"name": "gold", "host": "host1"}),
    "assign": ("PUT", "/v1/hosts/host1/policy", {"policy": "other"}),
    "unassign": ("PUT", "/v1/hosts/host1/policy", {"policy": None, "reason": " "}),
}


@pytest.mark.parametrize("case", CHANGES_WITHOUT_REASON)
def test_a_policy_change_without_a_reason_is_refused(
    server: Server, tpm: SoftTpm, agent: str, case: str
) -> None:
    server.attest(agent, tpm)
    assert _put(server, "other", STRICT, "baseline for the test").status_code == 200
    before = server.audit()
    method, path, body = CHANGES_WITHOUT_REASON[case]
    response = server.api.request(method, path, token=server.operator, json=body)
    assert response.status_code == 422, response.text
    refused = response.json()
    assert refused["error"] == "ReasonRequired"
    assert refused["message"].startswith(REASON_MESSAGE)
    assert "--reason" in refused["remedy"]
    assert server.audit() == before  # nothing changed, nothing recorded
    assert [p["name"] for p in server.api.get("/v1/policies", token=server.viewer).json()] == [
        "other"
    ]
    assert server.host("host1")["policy"] is None


def test_a_loosening_edit_is_audited_with_digests_and_summary(server: Server) -> None:
    created = _put(server, "gold", STRICT, "rack 12 baseline, ticket 17")
    assert created.status_code == 200, created.text
    old_digest = _digest(server, "gold")
    weaker = {
        **STRICT,
        "require_secure_boot": False,
        "kernel_cmdlines": [*STRICT["kernel_cmdlines"], "init=/bin/sh"],  # type: ignore[list-item]
        "kernel_cmdline_required": ["ro"],
    }
    changed = _put(server, "gold", weaker, "debugging esx7, ticket 4711")
    assert changed.status_code == 200, changed.text
    new_digest = _digest(server, "gold")
    assert new_digest != old_digest
    stored = server.api.get("/v1/policies/gold", token=server.viewer).json()
    document = json.dumps(stored["policy"], indent=2) + "\n"
    assert hashlib.sha256(document.encode()).hexdigest() == new_digest

    edit, create = server.audit(action="policy.set")
    assert create["reason"] == "rack 12 baseline, ticket 17"
    assert create["details"]["old_digest"] is None
    assert create["details"]["new_digest"] == old_digest
    assert create["details"]["summary"].startswith("created: Secure Boot required; ")
    assert edit["who"] == "operator-1"
    assert edit["reason"] == "debugging esx7, ticket 4711"
    details = edit["details"]
    assert details["policy"] == "gold"
    assert details["old_digest"] == old_digest
    assert details["new_digest"] == new_digest
    assert details["loosened"] is True
    assert details["summary"] == (
        "require_secure_boot: true → false; kernel_cmdlines: added 'init=/bin/sh'; "
        "kernel_cmdline_required: 'ro' now required"
    )
    assert [(c["field"], c["kind"]) for c in details["changes"]] == [
        ("require_secure_boot", "loosened"),
        ("kernel_cmdlines", "loosened"),
        ("kernel_cmdline_required", "tightened"),
    ]


def test_capture_and_assignment_name_host_and_both_policies(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    server.attest(agent, tpm)
    captured = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "gold", "host": "host1", "reason": "known-good after rebuild"},
    )
    assert captured.status_code == 200, captured.text
    gold = _digest(server, "gold")
    [capture] = server.audit(action="policy.captured")
    assert capture["host"] == "host1"
    assert capture["reason"] == "known-good after rebuild"
    assert capture["details"]["old_digest"] is None
    assert capture["details"]["new_digest"] == gold
    assert capture["details"]["assigned"] == {
        "host": "host1",
        "old": None,
        "new": {"name": "gold", "digest": gold},
    }

    # capture again from a boot with Secure Boot off: the edit says what it loosened
    tpm.reboot(BootConfig(secure_boot=False))
    server.attest(agent, tpm)
    again = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "gold", "host": "host1", "reason": "firmware update"},
    )
    assert again.status_code == 200, again.text
    recapture = server.audit(action="policy.captured")[0]
    assert recapture["details"]["old_digest"] == gold
    assert "require_secure_boot: true → false" in recapture["details"]["summary"]
    assert recapture["details"]["loosened"] is True
    lax = _digest(server, "gold")

    assert _put(server, "other", STRICT, "second policy").status_code == 200
    other = _digest(server, "other")
    moved = server.api.put(
        "/v1/hosts/host1/policy",
        token=server.operator,
        json={"policy": "other", "reason": "host moved to rack 12"},
    )
    assert moved.status_code == 200, moved.text
    unassigned = server.api.put(
        "/v1/hosts/host1/policy",
        token=server.operator,
        json={"policy": None, "reason": "host retired"},
    )
    assert unassigned.status_code == 200, unassigned.text
    off, on = server.audit(action="policy.assigned")
    assert on["host"] == "host1"
    assert on["reason"] == "host moved to rack 12"
    assert on["details"]["old"] == {"name": "gold", "digest": lax}
    assert on["details"]["new"] == {"name": "other", "digest": other}
    assert on["details"]["summary"]  # gold -> other, field by field
    assert off["reason"] == "host retired"
    assert off["details"]["old"] == {"name": "other", "digest": other}
    assert off["details"]["new"] is None
    assert off["details"]["summary"] == (
        "policy 'other' unassigned: the host is compared with no policy (never Passed)"
    )
