"""A real ``hostseal server run`` over TLS on a free port, driven over HTTPS and by the CLI."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509

from hostseal.cli import server as cli_server
from hostseal.secureconfig.recoverykey import RecoveryKey, key_check_value

from ._softtpm import SoftTpm

# Runs the hostseal CLI with the server's command groups registered (the lead registers them
# in hostseal.cli.main; until then this adds them), through main()'s error handling.
_CLI = (
    "import sys\n"
    "from hostseal.cli import admin, main, server\n"
    "for group in (server.server, admin.host, admin.alarm, admin.policy, admin.escrow):\n"
    "    if group.name not in main.cli.commands:\n"
    "        main.cli.add_command(group)\n"
    "main.main(sys.argv[1:])\n"
)


def hostseal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Live:
    url: str
    data: Path
    ca: Path
    admin: str
    viewer: str
    operator: str
    process: subprocess.Popen[str]

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=30)

    def cli(self, token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return hostseal(
            *args,
            "--server",
            self.url,
            "--ca",
            str(self.ca),
            env={"HOSTSEAL_TOKEN": token, "HOSTSEAL_SERVER_DATA": str(self.data)},
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("live") / "server"
    created = hostseal(
        "server", "token", "create", "--role", "admin", "--name", "admin", "--data-dir", str(data)
    )
    assert created.returncode == 0, created.stderr
    assert "shown only now" in created.stderr
    tokens = {"admin": created.stdout.strip()}
    runner = CliRunner()
    for role in ("operator", "viewer"):
        args = ["token", "create", "--role", role, "--name", role, "--data-dir", str(data)]
        result = runner.invoke(cli_server.server, [*args, "--json"])
        assert result.exit_code == 0, result.output
        tokens[role] = json.loads(result.stdout)["token"]
    # the CA first: clients get its path before the server runs (both would create it)
    ca_out = runner.invoke(cli_server.server, ["ca-cert", "--data-dir", str(data)])
    assert ca_out.exit_code == 0, ca_out.output
    ca = Path(ca_out.stdout.strip())
    context = ssl.create_default_context(cafile=str(ca))
    port = _free_port()
    log = (data / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "server",
            "run",
            "--data-dir",
            str(data),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/metrics", verify=context, timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((data / "server.log").read_text()) from None
                time.sleep(0.1)
        yield Live(url, data, ca, tokens["admin"], tokens["viewer"], tokens["operator"], process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    logged = (data / "server.log").read_text()
    assert "Traceback" not in logged, logged


def test_tls_is_verified_with_the_generated_ca(live: Live) -> None:
    with live.http() as client:
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
        verdict = client.post(
            "/v1/attest/evidence",
            json={
                "nonce": challenge["nonce"],
                "quote": _b64(attest),
                "signature": _b64(signature),
                "pcrs": {b: {str(i): v.hex() for i, v in vs.items()} for b, vs in values.items()},
                "eventlog": _b64(tpm.eventlog),
                "secure_config": {
                    "mode": "TPM",
                    "require_secure_boot": True,
                    "require_exec_installed_only": False,
                    "recovery_key_checks": [
                        {
                            "recovery_id": key.formatted_id,
                            "kcv": key_check_value(key.recovery_id, key.secret),
                        }
                    ],
                },
            },
        ).json()
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

    captured = live.cli(live.operator, "policy", "capture", "gold", "--host", "live1")
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
