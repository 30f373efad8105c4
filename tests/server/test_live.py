"""A real ``hostseal server run`` over TLS on a free port, driven over HTTPS and by the CLI."""

from __future__ import annotations

import base64
import json
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from _service import Live, hostseal, live_service
from hostseal.client.wire import EvidenceIn, RecoveryKeyCheck, SecureConfig
from hostseal.secureconfig.recoverykey import RecoveryKey, key_check_value

from ._softtpm import SoftTpm


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("live") / "server"
    with live_service(data) as service:
        yield service


def test_token_is_shown_once(tmp_path: Path) -> None:
    created = hostseal(
        "server", "token", "create", "--role", "admin", "--name", "a", "--data-dir", str(tmp_path)
    )
    assert created.returncode == 0, created.stderr
    assert "shown only now" in created.stderr


def test_tls_is_verified_with_the_generated_ca(live: Live) -> None:
    with live.http(live.viewer) as client:  # /metrics needs a token by default
        response = client.get("/metrics")
    assert response.status_code == 200
    assert "hostseal_hosts" in response.text
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{live.url}/metrics", verify=True, timeout=5)
    pem = ssl.get_server_certificate(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
    cert = x509.load_pem_x509_certificate(pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate(live.ca.read_bytes())
    assert cert.issuer == ca.subject
    tls = live.data / "tls"
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((tls / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((live.data / "server.key").stat().st_mode) == 0o600


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _enrol_and_attest(live: Live, tpm: SoftTpm, key: RecoveryKey) -> str:
    with live.http() as client:
        started = client.post(
            "/v1/enrol/start",
            json={
                "name": "live1",
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
        ).json()
    assert finished["status"] == "pending-approval"
    approved = live.cli(live.operator, "host", "approve", "live1", "--reason", "lab rack 3")
    assert approved.returncode == 0, approved.stderr
    agent = str(finished["agent_token"])
    with live.http(agent) as client:
        challenge = client.post("/v1/attest/challenge", json={}).json()
        attest, signature, values = tpm.quote(bytes.fromhex(challenge["nonce"]), challenge["pcrs"])
        evidence = EvidenceIn.of_quote(
            nonce=challenge["nonce"],
            challenge=challenge["challenge"],
            quote=attest,
            signature=signature,
            pcrs=values,
            eventlog=tpm.eventlog,
            secure_config=SecureConfig(
                mode="TPM",
                require_secure_boot=True,
                require_exec_installed_only=False,
                recovery_key_checks=[
                    RecoveryKeyCheck(
                        recovery_id=key.formatted_id,
                        kcv=key_check_value(key.recovery_id, key.secret),
                    )
                ],
            ),
        )
        verdict = client.post("/v1/attest/evidence", json=evidence.model_dump(mode="json")).json()
        assert verdict["status"] == "Warning"
    return agent


def test_cli_against_the_live_server(live: Live, tmp_path: Path) -> None:
    tpm, key = SoftTpm(), RecoveryKey.generate()
    agent = _enrol_and_attest(live, tpm, key)

    listed = live.cli(live.viewer, "host", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [host] = json.loads(listed.stdout)
    assert host["name"] == "live1" and host["status"] == "warning"
    table = live.cli(live.viewer, "host", "list")
    assert "live1" in table.stdout and "warning" in table.stdout

    alarms = json.loads(live.cli(live.viewer, "alarm", "list", "--json").stdout)
    assert [a["kind"] for a in alarms] == ["tpm-recovery-key-backup"]
    reset = live.cli(live.operator, "alarm", "reset", str(alarms[0]["id"]), "--comment", "done")
    assert reset.returncode == 1
    assert "cannot be reset by hand while its condition holds" in reset.stderr
    assert "What to do:" in reset.stderr

    with live.http(agent) as client:
        escrowed = client.post(
            "/v1/escrow",
            json={"keys": [{"recovery_id": key.formatted_id, "key": key.formatted_key}]},
        )
    assert escrowed.json() == {"escrowed": 1}
    assert json.loads(live.cli(live.viewer, "alarm", "list", "--json").stdout) == []

    denied = live.cli(live.viewer, "escrow", "get", "live1", "--reason", "curious")
    assert denied.returncode == 1
    assert "Only the admin role may read escrowed recovery keys" in denied.stderr
    denied_json = live.cli(live.viewer, "escrow", "get", "live1", "--reason", "x", "--json")
    assert json.loads(denied_json.stdout)["error"] == "Forbidden"

    got = live.cli(live.admin, "escrow", "get", "live1", "--reason", "board swap", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["keys"][0]["key"] == key.formatted_key
    out = tmp_path / "escrow.json"
    exported = live.cli(live.admin, "escrow", "export", "--reason", "backup", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["hosts"][0]["host"] == "live1"

    out.write_text("keep me\n")
    refused = live.cli(live.admin, "escrow", "export", "--reason", "backup", "--out", str(out))
    assert refused.returncode == 1
    assert f"{out} already exists; the export was not written." in refused.stderr
    assert "Pass --force to replace it, or choose another --out file." in refused.stderr
    assert out.read_text() == "keep me\n"
    forced = live.cli(
        live.admin, "escrow", "export", "--reason", "backup", "--out", str(out), "--force"
    )
    assert forced.returncode == 0, forced.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["hosts"][0]["host"] == "live1"
    assert [p.name for p in out.parent.iterdir()] == [out.name]

    captured = live.cli(
        live.operator, "policy", "capture", "gold", "--host", "live1", "--reason", "golden"
    )
    assert captured.returncode == 0, captured.stderr
    assert "assigned to it" in captured.stdout
    shown = live.cli(live.viewer, "host", "show", "live1", "--json")
    assert json.loads(shown.stdout)["policy"] == "gold"

    with live.http(live.admin) as client:
        audit: list[dict[str, Any]] = client.get("/v1/audit").json()
    reads = [e for e in audit if e["action"] in ("escrow.read", "escrow.export")]
    assert {(e["who"], e["reason"]) for e in reads} == {
        ("admin", "board swap"),
        ("admin", "backup"),
    }


def test_cli_needs_a_token_and_the_ca(live: Live) -> None:
    no_token = hostseal(
        "host", "list", "--server", live.url, "--ca", str(live.ca), env={"HOSTSEAL_TOKEN": ""}
    )
    assert no_token.returncode == 1
    assert "No API token: set HOSTSEAL_TOKEN or give --token-file." in no_token.stderr
    no_ca = hostseal(
        "host",
        "list",
        "--server",
        live.url,
        env={"HOSTSEAL_TOKEN": live.viewer, "HOSTSEAL_SERVER_DATA": "/nonexistent"},
    )
    assert no_ca.returncode == 1
    assert "could not be verified" in no_ca.stderr
    assert "--ca" in no_ca.stderr
