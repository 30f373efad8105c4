"""Recovery-key escrow: envelope encryption, KCVs, the backup alarm, audited reads."""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import stat
from typing import Any

import pytest

from hostseal.client.wire import EvidenceIn, SecureConfig
from hostseal.secureconfig.recoverykey import RecoveryKey
from hostseal.server.clock import FixedClock
from hostseal.server.serverkey import load_or_create
from hostseal.server.settings import ServerSettings

from ._softtpm import SoftTpm
from .conftest import Server, make_server


def kcv(key: RecoveryKey) -> str:
    """As docs/api.md defines it, computed here independently of the server."""
    label = b"hostseal recovery key check v1" + key.recovery_id.bytes
    return hmac.new(key.secret, label, hashlib.sha256).digest()[:16].hex()


def tpm_mode(*keys: RecoveryKey, mode: str = "TPM") -> dict[str, Any]:
    return {
        "mode": mode,
        "require_secure_boot": True,
        "require_exec_installed_only": False,
        "recovery_key_checks": [{"recovery_id": k.formatted_id, "kcv": kcv(k)} for k in keys],
    }


def escrow(server: Server, agent: str, *keys: RecoveryKey) -> int:
    response = server.api.post(
        "/v1/escrow",
        token=agent,
        json={"keys": [{"recovery_id": k.formatted_id, "key": k.formatted_key} for k in keys]},
    )
    assert response.status_code == 200, response.text
    count: int = response.json()["escrowed"]
    return count


def backup_alarms(server: Server, state: str = "active") -> list[dict[str, Any]]:
    return [a for a in server.alarms(state=state) if a["kind"] == "tpm-recovery-key-backup"]


def test_backup_alarm_until_escrowed_then_again_after_rotation(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    key = RecoveryKey.generate()
    server.attest(agent, tpm, secure_config=tpm_mode(key))
    [alarm] = backup_alarms(server)
    assert alarm["title"] == "TPM encryption recovery key backup alarm"
    assert f"the server holds no key for recovery ID {key.formatted_id}" in alarm["message"]
    assert server.host("host1")["escrow"]["state"] == "missing"

    # reset by hand is refused while the key is not escrowed
    refused = server.api.post(
        f"/v1/alarms/{alarm['id']}/reset", token=server.operator, json={"comment": "saved it"}
    )
    assert refused.status_code == 409
    body = refused.json()
    assert body["error"] == "AlarmConditionHolds"
    assert body["message"].startswith(
        "The TPM encryption recovery key backup alarm of host 'host1' cannot be reset by hand "
        "while its condition holds: 0 of the 1 recovery keys of host 'host1' are escrowed"
    )
    assert "clears by itself" in body["remedy"]
    ack = server.api.post(
        f"/v1/alarms/{alarm['id']}/ack", token=server.operator, json={"comment": "on it"}
    )
    assert ack.status_code == 200
    assert ack.json()["state"] == "acknowledged"

    assert escrow(server, agent, key) == 1
    assert backup_alarms(server) == []
    [cleared] = backup_alarms(server, state="cleared")
    assert [e["event"] for e in cleared["history"]] == ["raised", "acknowledged", "cleared"]
    assert cleared["history"][1]["who"] == "operator-1"
    host = server.host("host1")
    assert host["escrow"] == {
        "state": "complete",
        "reported": 1,
        "matched": 1,
        "missing": [],
        "mismatched": [],
        "escrowed": 1,
    }
    # escrowing the same key again is idempotent
    assert escrow(server, agent, key) == 1
    assert server.host("host1")["escrow"]["escrowed"] == 1

    # rotation: the host reports a new recovery key; the alarm is raised again
    rotated = RecoveryKey.generate()
    server.attest(agent, tpm, secure_config=tpm_mode(rotated))
    [again] = backup_alarms(server)
    assert again["id"] != alarm["id"]
    escrow(server, agent, rotated)
    assert backup_alarms(server) == []


def test_a_key_that_does_not_match_the_hosts_kcv_does_not_clear_the_alarm(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    key = RecoveryKey.generate()
    changed = RecoveryKey(key.recovery_id, os.urandom(32))
    server.attest(agent, tpm, secure_config=tpm_mode(key))
    escrow(server, agent, key)
    assert backup_alarms(server) == []
    # the host now reports another key under the same recovery ID
    server.attest(agent, tpm, secure_config=tpm_mode(changed))
    [alarm] = backup_alarms(server)
    assert "does not match the host's key (the key check values differ" in alarm["message"]
    assert server.host("host1")["escrow"]["mismatched"] == [key.formatted_id]
    # a key that does not match what the host reports is refused (issue 12 item 7)
    refused = server.api.post(
        "/v1/escrow",
        token=agent,
        json={"keys": [{"recovery_id": key.formatted_id, "key": key.formatted_key}]},
    )
    assert refused.status_code == 422
    assert "does not match the key check value host 'host1' reported" in refused.json()["message"]
    escrow(server, agent, changed)
    assert backup_alarms(server) == []


def test_every_reported_slot_must_be_escrowed(server: Server, tpm: SoftTpm, agent: str) -> None:
    first, second = RecoveryKey.generate(), RecoveryKey.generate()
    server.attest(agent, tpm, secure_config=tpm_mode(first, second))
    escrow(server, agent, first)
    [alarm] = backup_alarms(server)
    assert alarm["message"].startswith("1 of the 2 recovery keys of host 'host1' are escrowed")
    escrow(server, agent, second)
    assert backup_alarms(server) == []


def test_tpm_mode_without_any_recovery_key_raises_the_alarm(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    server.attest(agent, tpm, secure_config=tpm_mode())
    [alarm] = backup_alarms(server)
    assert "has no recovery key" in alarm["message"]
    assert "reinstall" in alarm["message"]


def test_no_alarm_in_none_mode(server: Server, tpm: SoftTpm, agent: str) -> None:
    server.attest(agent, tpm, secure_config=tpm_mode(RecoveryKey.generate(), mode="NONE"))
    assert backup_alarms(server) == []
    assert server.host("host1")["escrow"]["state"] == "not-applicable"


def test_reading_keys_needs_admin_and_a_reason_and_is_audited(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    key = RecoveryKey.generate()
    server.attest(agent, tpm, secure_config=tpm_mode(key))
    escrow(server, agent, key)

    viewer = server.api.get("/v1/escrow/host1", token=server.viewer, params={"reason": "x"})
    assert viewer.status_code == 403
    assert viewer.json()["message"] == (
        "Only the admin role may read escrowed recovery keys or the audit log; the token "
        "'viewer-1' has the viewer role."
    )
    operator = server.api.get("/v1/escrow/host1", token=server.operator, params={"reason": "x"})
    assert operator.status_code == 403
    no_reason = server.api.get("/v1/escrow/host1", token=server.admin)
    assert no_reason.status_code == 422
    assert no_reason.json()["message"] == (
        "A reason is required to read escrowed recovery keys; it is kept in the audit log."
    )
    blank = server.api.get("/v1/escrow/host1", token=server.admin, params={"reason": "  "})
    assert blank.status_code == 422
    assert server.audit(action="escrow.read") == []

    response = server.api.get(
        "/v1/escrow/host1", token=server.admin, params={"reason": "TPM replaced, INC-42"}
    )
    assert response.status_code == 200
    [read] = response.json()["keys"]
    assert read["recovery_id"] == key.formatted_id
    assert read["key"] == key.formatted_key
    assert read["kcv"] == kcv(key)
    assert read["current"] is True
    [event] = server.audit(action="escrow.read")
    assert event["who"] == "admin-1"
    assert event["role"] == "admin"
    assert event["host"] == "host1"
    assert event["reason"] == "TPM replaced, INC-42"
    assert event["at"] == server.clock.now().isoformat()
    assert event["details"]["recovery_ids"] == [key.formatted_id]

    unknown = server.api.get("/v1/escrow/nohost", token=server.admin, params={"reason": "r"})
    assert unknown.status_code == 404

    export = server.api.get("/v1/escrow", token=server.admin, params={"reason": "quarterly backup"})
    assert export.status_code == 200
    document = export.json()
    assert document["format"] == "hostseal-escrow-export v1"
    assert document["reason"] == "quarterly backup"
    assert document["hosts"][0]["keys"][0]["key"] == key.formatted_key
    [exported] = server.audit(action="escrow.export")
    assert exported["reason"] == "quarterly backup"
    # which hosts and recovery IDs left the server, not just how many (issue 12, item 16)
    assert exported["details"] == {
        "hosts": 1,
        "keys": 1,
        "recovery_ids": {"host1": [key.formatted_id]},
    }
    assert server.api.get("/v1/escrow", token=server.admin).status_code == 422


def test_escrow_refuses_malformed_keys(server: Server, agent: str) -> None:
    response = server.api.post(
        "/v1/escrow",
        token=agent,
        json={"keys": [{"recovery_id": "{not-a-guid}", "key": "123"}]},
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith("Key 1 cannot be escrowed: '{not-a-guid}'")
    user = server.api.post("/v1/escrow", token=server.admin, json={"keys": []})
    assert user.status_code == 403


def test_keys_are_encrypted_in_the_database_under_a_key_outside_it(
    settings: ServerSettings, server: Server, tpm: SoftTpm, agent: str, clock: FixedClock
) -> None:
    key = RecoveryKey.generate()
    server.attest(agent, tpm, secure_config=tpm_mode(key))
    escrow(server, agent, key)
    key_file = settings.server_key_path
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.parent == settings.data_dir
    db = sqlite3.connect(settings.data_dir / "hostseal.db")
    row = db.execute("SELECT wrapped_data_key, ciphertext FROM escrowed_keys").fetchone()
    raw = b"".join(db.execute("SELECT * FROM escrowed_keys").fetchone()[i] or b"" for i in (5, 6))
    db.close()
    assert key.secret not in raw and key.formatted_key.encode() not in raw
    assert len(row[1]) == 12 + 32 + 16  # nonce, secret, tag

    # another server key cannot open them, and says what to do
    server.ctx.close()
    key_file.unlink()
    other = make_server(settings, clock, suffix="2")
    try:
        response = other.api.get("/v1/escrow/host1", token=other.admin, params={"reason": "r"})
        assert response.status_code == 500
        assert "server key file holds key" in response.json()["message"]
        assert "Restore the server.key file" in response.json()["remedy"]
    finally:
        other.ctx.close()


def test_a_server_key_readable_by_others_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "server.key"
    load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(Exception, match="readable by other users") as info:
        load_or_create(path)
    assert "chmod 600" in str(info.value)


# --- issue 12 item 7: escrow only from approved hosts, only keys the host reports ------------


def _export(server: Server) -> list[dict[str, Any]]:
    response = server.api.get("/v1/escrow", token=server.admin, params={"reason": "check"})
    assert response.status_code == 200, response.text
    hosts: list[dict[str, Any]] = response.json()["hosts"]
    return hosts


def _escrow_raw(server: Server, agent: str, *keys: RecoveryKey) -> Any:
    return server.api.post(
        "/v1/escrow",
        token=agent,
        json={"keys": [{"recovery_id": k.formatted_id, "key": k.formatted_key} for k in keys]},
    )


def test_a_pending_host_cannot_escrow(server: Server) -> None:
    pending = server.enrol("host2", SoftTpm())
    assert pending["status"] == "pending-approval"
    response = _escrow_raw(server, pending["agent_token"], RecoveryKey.generate())
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "EscrowRefused"
    assert body["message"] == (
        "Host 'host2' is pending-approval: the server escrows recovery keys only from approved "
        "hosts, so nothing was stored."
    )
    assert "hostseal host approve host2 --reason" in body["remedy"]
    assert _export(server) == []
    assert server.audit(action="escrow.stored") == []


def test_only_reported_recovery_ids_are_escrowed(server: Server, tpm: SoftTpm, agent: str) -> None:
    reported, other = RecoveryKey.generate(), RecoveryKey.generate()
    # nothing reported yet: nothing accepted
    early = _escrow_raw(server, agent, reported)
    assert early.status_code == 422
    assert early.json()["error"] == "EscrowRefused"
    assert early.json()["message"] == (
        "Host 'host1' has reported no recovery keys with its attestation evidence, so the server "
        "escrows none of the 1 key(s) sent; nothing was stored."
    )
    assert "hostseal agent run --once" in early.json()["remedy"]

    server.attest(agent, tpm, secure_config=tpm_mode(reported))
    response = _escrow_raw(server, agent, reported, other)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "EscrowRefused"
    assert body["message"] == (
        f"Recovery ID {other.formatted_id} (key 2) is not among the recovery keys host 'host1' "
        "reported with its last attestation; nothing was stored."
    )
    assert "hostseal recovery list" in body["remedy"]

    # the same ID with another secret (its key check value differs) is refused too
    forged = RecoveryKey(reported.recovery_id, os.urandom(32))
    mismatch = _escrow_raw(server, agent, forged)
    assert mismatch.status_code == 422
    assert mismatch.json()["message"] == (
        f"The key sent for recovery ID {reported.formatted_id} (key 1) does not match the key "
        "check value host 'host1' reported for it; nothing was stored."
    )
    assert _export(server) == []

    assert escrow(server, agent, reported) == 1
    [exported] = _export(server)
    assert [k["recovery_id"] for k in exported["keys"]] == [reported.formatted_id]


def test_keys_reported_with_a_quote_that_does_not_verify_are_not_escrowed(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    """What a host reports about its configuration is kept only with evidence whose quote
    verifies: otherwise anyone with the agent token could make the server accept keys."""
    genuine, planted = RecoveryKey.generate(), RecoveryKey.generate()
    server.attest(agent, tpm, secure_config=tpm_mode(genuine))

    challenge = server.challenge(agent)
    nonce = challenge["nonce"]
    attest, signature, values = tpm.quote(bytes.fromhex(nonce), challenge["pcrs"])
    broken = bytearray(signature)
    broken[-1] ^= 0x01
    body = EvidenceIn.of_quote(
        nonce=nonce,
        challenge=challenge["challenge"],
        quote=attest,
        signature=bytes(broken),
        pcrs=values,
        eventlog=tpm.eventlog,
        secure_config=SecureConfig.model_validate(tpm_mode(planted)),
    )
    refused = server.api.post("/v1/attest/evidence", token=agent, json=body.model_dump(mode="json"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "QuoteSignatureInvalid"

    response = _escrow_raw(server, agent, planted)
    assert response.status_code == 422
    assert response.json()["message"] == (
        f"Recovery ID {planted.formatted_id} (key 1) is not among the recovery keys host "
        "'host1' reported with its last attestation; nothing was stored."
    )
    assert escrow(server, agent, genuine) == 1
