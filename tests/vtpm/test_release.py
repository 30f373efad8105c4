"""Key release tied to attestation: a host that fails attestation gets no vTPM key."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hostseal import vtpm
from hostseal.keyprovider import (
    AttestationGate,
    HttpVerdictSource,
    KeyReleaseRefused,
    ProviderStore,
    StaticVerdictSource,
)
from hostseal.vtpm import VtpmDirs

pytestmark = pytest.mark.swtpm


def test_unattested_host_cannot_start_a_vtpm(dirs: VtpmDirs, providers: ProviderStore) -> None:
    vtpm.create(dirs, providers, "vm1")
    verdicts = StaticVerdictSource()
    gated = ProviderStore(providers.path, gate=AttestationGate(verdicts, "host1"))

    verdicts.set("host1", "failed", ["PCR 7 changed: Secure Boot was turned off"])
    with pytest.raises(KeyReleaseRefused) as err:
        vtpm.start(dirs, gated, "vm1", tcp=True)
    assert err.value.message == (
        "Host 'host1' did not pass attestation (last status: failed: PCR 7 changed: Secure Boot "
        "was turned off). Keys for vTPMs are released only to hosts whose last attestation "
        "passed."
    )
    assert "let the agent attest again (hostseal agent run --once)" in err.value.remedy
    assert err.value.to_dict()["status"] == "failed"
    assert not vtpm.status(dirs, "vm1").running
    with pytest.raises(KeyReleaseRefused):
        vtpm.create(dirs, gated, "vm2")
    assert not dirs.vm("vm2").exists()

    verdicts.set("host1", "passed")
    st = vtpm.start(dirs, gated, "vm1", tcp=True)
    assert st.running
    vtpm.stop(dirs, "vm1")


@pytest.mark.parametrize(
    ("status", "remedy"),
    [
        ("not-reporting", "Start the agent"),
        ("pending-approval", "hostseal host approve NAME"),
        ("warning", "Resolve the warning"),
    ],
)
def test_each_status_says_what_to_do(status: str, remedy: str) -> None:
    verdicts = StaticVerdictSource()
    verdicts.set("h", status)
    with pytest.raises(KeyReleaseRefused) as err:
        AttestationGate(verdicts, "h").release_check()
    assert f"last status: {status})" in err.value.message
    assert remedy in err.value.remedy


def _source(tmp_path: Path, handler: httpx.MockTransport) -> HttpVerdictSource:
    token = tmp_path / "token"
    token.write_text("agent-token-1\n")
    source = HttpVerdictSource("https://attest.example", token)
    source.transport = handler
    return source


def test_http_verdict_source(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"host": "host1", "status": "passed", "last_attested_at": "2026-01-01T00:00:00Z"}
        return httpx.Response(200, json=body)

    gate = AttestationGate(_source(tmp_path, httpx.MockTransport(answer)), "host1")
    gate.release_check()
    assert seen[0].url == "https://attest.example/v1/attest/status"
    assert seen[0].headers["Authorization"] == "Bearer agent-token-1"


def test_http_verdict_source_fails_closed(tmp_path: Path) -> None:
    def failed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"host": "h", "status": "failed", "messages": ["Secure Boot is off"]}
        )

    with pytest.raises(KeyReleaseRefused, match="Secure Boot is off"):
        AttestationGate(_source(tmp_path, httpx.MockTransport(failed)), "h").release_check()

    def forbidden(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "Forbidden"})

    with pytest.raises(KeyReleaseRefused, match="answered 403"):
        AttestationGate(_source(tmp_path, httpx.MockTransport(forbidden)), "h").release_check()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(KeyReleaseRefused, match="could not be asked") as err:
        AttestationGate(_source(tmp_path, httpx.MockTransport(down)), "h").release_check()
    assert "Check that the service runs" in err.value.remedy

    missing = HttpVerdictSource("https://a.example", tmp_path / "no-token")
    with pytest.raises(KeyReleaseRefused, match="Cannot read the agent token"):
        AttestationGate(missing, "h").release_check()


def test_release_configuration(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    assert store.gate() is None
    store.require_attestation("host1", "https://attest.example", tmp_path / "token")
    config = json.loads((tmp_path / "kp" / "release.json").read_text())
    assert config["host"] == "host1" and config["server"] == "https://attest.example"
    gate = store.gate()
    assert gate is not None and gate.host == "host1"
    assert isinstance(gate.source, HttpVerdictSource)
    store.release_without_attestation()
    assert store.gate() is None
