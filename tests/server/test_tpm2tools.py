"""Enrolment and attestation with a real TPM: a lab host's swtpm driven by tpm2-tools, an
independent producer of EKs, AKs, credential activation and quotes."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.client.wire import EvidenceIn
from hostseal.lab import BootConfig, LabHost

from .conftest import Server

TOOLS = (
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_activatecredential",
    "tpm2_quote",
    "tpm2_pcrread",
    "tpm2_flushcontext",
    "tpm2_evictcontrol",
)
AK_HANDLE = "0x81018000"
pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS), reason="tpm2-tools is not installed"
    ),
]


class Tools:
    """tpm2-tools in a scratch directory; swtpm has no resource manager, so transient objects
    are flushed after each tool."""

    def __init__(self, host: LabHost, workdir: Path) -> None:
        self.env = {**os.environ, "TPM2TOOLS_TCTI": host.tcti}
        self.dir = workdir

    def on(self, host: LabHost) -> Tools:
        """After a reboot swtpm listens on another port."""
        self.env["TPM2TOOLS_TCTI"] = host.tcti
        return self

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            args, cwd=self.dir, env=self.env, capture_output=True, text=True, check=False
        )
        subprocess.run(
            ["tpm2_flushcontext", "-t"],
            cwd=self.dir,
            env=self.env,
            check=False,
            capture_output=True,
        )
        assert result.returncode == 0, f"{args[0]}: {result.stderr}"
        return result.stdout

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def enrol(server: Server, tools: Tools, name: str) -> str:
    tools("tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
    tools(
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
    )
    started = server.api.post(
        "/v1/enrol/start",
        json={
            "name": name,
            "ek_public": b64(tools.read("ek.pub")),
            "ek_certificate": None,
            "ak_public": b64(tools.read("ak.pub")),
        },
    )
    assert started.status_code == 200, started.text
    body = started.json()
    blob = base64.b64decode(body["credential_blob"])
    secret = base64.b64decode(body["encrypted_secret"])
    (tools.dir / "cred.in").write_bytes(struct.pack(">II", 0xBADCC0DE, 1) + blob + secret)
    tools("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
    tools("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
    tools(
        "tpm2_activatecredential",
        "-c",
        "ak.ctx",
        "-C",
        "ek.ctx",
        "-i",
        "cred.in",
        "-o",
        "secret.out",
        "-P",
        "session:session.ctx",
    )
    # a persistent AK, as an agent keeps it across reboots
    tools("tpm2_evictcontrol", "-C", "o", "-c", "ak.ctx", AK_HANDLE)
    finished = server.api.post(
        "/v1/enrol/finish",
        json={"enrolment_id": body["enrolment_id"], "secret": b64(tools.read("secret.out"))},
    )
    assert finished.status_code == 200, finished.text
    server.api.post(f"/v1/hosts/{name}/approve", token=server.operator, json={"reason": "lab"})
    token: str = finished.json()["agent_token"]
    return token


def attest(server: Server, tools: Tools, host: LabHost, agent: str) -> dict[str, object]:
    challenge = server.challenge(agent)
    selection = f"{challenge['bank']}:" + ",".join(str(p) for p in challenge["pcrs"])
    tools(
        "tpm2_quote",
        "-c",
        AK_HANDLE,
        "-l",
        selection,
        "-q",
        challenge["nonce"],
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-g",
        "sha256",
    )
    tools("tpm2_pcrread", selection, "-o", "pcrs.bin")
    raw = tools.read("pcrs.bin")
    pcrs = {p: raw[i * 32 : (i + 1) * 32] for i, p in enumerate(sorted(challenge["pcrs"]))}
    evidence = EvidenceIn.of_quote(
        nonce=challenge["nonce"],
        challenge=challenge["challenge"],
        quote=tools.read("quote.msg"),
        signature=tools.read("quote.sig"),
        pcrs={challenge["bank"]: pcrs},
        eventlog=host.eventlog.read_bytes(),
    )
    response = server.api.post(
        "/v1/attest/evidence", token=agent, json=evidence.model_dump(mode="json")
    )
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def test_tpm2_tools_host_enrols_attests_and_fails_without_secure_boot(
    server: Server, lab_dir: Path, tmp_path: Path
) -> None:
    host = lab.start(lab_dir, "tools1")
    tools = Tools(host, tmp_path)
    agent = enrol(server, tools, "tools1")
    assert attest(server, tools, host, agent)["status"] == "Warning"
    captured = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": "lab", "host": "tools1", "reason": "golden"},
    )
    assert captured.status_code == 200, captured.text
    assert attest(server, tools, host, agent)["status"] == "Passed"

    host = lab.reboot(lab_dir, "tools1", BootConfig(secure_boot=False))
    verdict = attest(server, tools.on(host), host, agent)
    assert verdict["status"] == "Failed"
    assert any("Secure Boot" in str(m) for m in verdict["messages"])  # type: ignore[attr-defined]
    assert server.alarms(state="active")[0]["kind"] == "host-tpm-attestation"


def test_replaced_tpm_is_a_change_request(server: Server, lab_dir: Path, tmp_path: Path) -> None:
    host = lab.start(lab_dir, "tools2")
    first = tmp_path / "first"
    first.mkdir()
    enrol(server, Tools(host, first), "tools2")
    old = server.host("tools2")["ek"]["fingerprint"]
    before = server.host("tools2")["status"]
    host = lab.replace_tpm(lab_dir, "tools2")
    second = Tools(host, tmp_path)
    second("tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
    second(
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "ak.pub",
        "-n",
        "ak.name",
    )
    with pytest.raises(AssertionError, match="TpmChangeRequested"):
        enrol(server, second, "tools2")
    shown = server.host("tools2")
    assert shown["status"] == before  # the host is not changed by an enrolment
    assert shown["ek"]["fingerprint"] == old and shown["ek"]["new_fingerprint"] is None
    [request] = shown["tpm_change_requests"]
    assert request["old_ek_fingerprint"] == old != request["new_ek_fingerprint"]
