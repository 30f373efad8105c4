"""Acceptance of the attestation service, against a real server process, real agents and lab
hosts (software TPMs measured by the firmware simulation)."""

from __future__ import annotations

import time

import pytest

from hostseal import lab
from hostseal.agent import Agent, AgentConfig
from hostseal.client.http import ApiError
from hostseal.client.wire import EvidenceIn
from hostseal.measure import parse_event_log
from hostseal.secureconfig import manager
from hostseal.tpm import open_tpm
from hostseal.tpm.attestation import AkUnavailable, quote

from .conftest import Fleet

pytestmark = pytest.mark.swtpm


def enrol_and_approve(fleet: Fleet, name: str) -> None:
    fleet.add(name)
    assert fleet.agent(name).enrol() == "pending-approval"  # lab TPMs have no vendor EK cert
    approved = fleet.service.cli(
        fleet.service.operator, "host", "approve", name, "--reason", "lab host, EK checked by hand"
    )
    assert approved.returncode == 0, approved.stderr


def three_passing_hosts(fleet: Fleet) -> None:
    for name in ("esx1", "esx2", "esx3"):
        enrol_and_approve(fleet, name)
    first = fleet.attest("esx1")
    assert first.status == "Warning"
    assert "No reference policy" in " ".join(first.messages)
    captured = fleet.service.cli(
        fleet.service.operator,
        "policy",
        "capture",
        "golden",
        "--host",
        "esx1",
        "--reason",
        "golden",
    )
    assert captured.returncode == 0, captured.stderr
    assigned = fleet.service.cli(
        fleet.service.operator, "policy", "assign", "golden", "esx2", "esx3", "--reason", "fleet"
    )
    assert assigned.returncode == 0, assigned.stderr
    for name in ("esx1", "esx2", "esx3"):
        outcome = fleet.attest(name)
        assert (outcome.status, outcome.messages) == ("Passed", [])
        assert fleet.host(name)["status"] == "passed"


def test_secure_boot_off_fails_then_recovers_by_itself(fleet: Fleet) -> None:
    three_passing_hosts(fleet)
    host = fleet.hosts["esx2"]
    lab.reboot(fleet.lab_dir, "esx2", host.boot.with_changes(secure_boot=False))
    failed = fleet.attest("esx2")
    assert failed.status == "Failed"
    assert "Host secure boot was disabled" in failed.messages
    shown = fleet.host("esx2")
    assert shown["status"] == "failed" and shown["message"] == "Host secure boot was disabled"
    [alarm] = fleet.alarms("esx2")
    assert alarm["kind"] == "host-tpm-attestation" and alarm["state"] == "raised"
    # Secure Boot back on: the agent attests again by itself after the reboot; no operator.
    lab.reboot(fleet.lab_dir, "esx2", host.boot.with_changes(secure_boot=True))
    assert fleet.attest("esx2").status == "Passed"
    assert fleet.alarms("esx2") == []
    history = fleet.alarms("esx2", all_states=True)
    assert [a["state"] for a in history] == ["cleared"]
    verdicts = [v["status"] for v in fleet.host("esx2")["verdicts"]]  # type: ignore[union-attr]
    assert verdicts[:3] == ["Passed", "Failed", "Passed"]
    for other in ("esx1", "esx3"):
        assert fleet.host(other)["status"] == "passed"


def _open_request(fleet: Fleet, name: str) -> dict[str, object]:
    shown = fleet.host(name)
    [request] = [r for r in shown["tpm_change_requests"] if r["state"] == "open"]  # type: ignore[union-attr, index]
    return request  # type: ignore[no-any-return]


def test_replaced_tpm_is_a_request_until_an_operator_accepts_it(fleet: Fleet) -> None:
    """A board swap: the new TPM's enrolment becomes a request; the host keeps its identity
    until an operator accepts the request; the new TPM (no vendor chain) then waits for
    approval; approved, it passes."""
    three_passing_hosts(fleet)
    old = fleet.host("esx3")["ek"]["fingerprint"]  # type: ignore[index]
    lab.replace_tpm(fleet.lab_dir, "esx3")
    with pytest.raises(AkUnavailable):
        fleet.attest("esx3")  # the AK does not load in the new TPM; the agent forgets it
    with pytest.raises(ApiError) as err:
        fleet.attest("esx3")  # enrols again, with the new TPM's EK
    assert err.value.status == 409 and err.value.kind == "TpmChangeRequested"
    request = _open_request(fleet, "esx3")
    assert f"hostseal host accept-tpm esx3 --request {request['id']}" in str(err.value.remedy)
    shown = fleet.host("esx3")
    assert shown["status"] == "passed" and shown["ek"]["fingerprint"] == old  # type: ignore[index]
    accepted = fleet.service.cli(
        fleet.service.operator,
        "host",
        "accept-tpm",
        "esx3",
        "--request",
        str(request["id"]),
        "--reason",
        "system board replaced, ticket 4711",
    )
    assert accepted.returncode == 0, accepted.stderr
    with pytest.raises(ApiError) as waiting:
        fleet.attest("esx3")  # enrolled with the new TPM, which has no vendor chain
    assert waiting.value.kind == "HostNotTrusted"
    assert fleet.host("esx3")["status"] == "pending-approval"
    approved = fleet.service.cli(
        fleet.service.operator, "host", "approve", "esx3", "--reason", "new board, EK checked"
    )
    assert approved.returncode == 0, approved.stderr
    assert fleet.attest("esx3").status == "Passed"
    with fleet.service.http(fleet.service.admin) as client:
        audit = client.get("/v1/audit").json()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    [event] = [e for e in entries if e["action"] == "host.tpm-change-accepted"]
    assert event["host"] == "esx3" and event["details"]["old_ek_fingerprint"] == old


def test_enrolment_under_another_hosts_name_does_not_hijack_it(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12 item 2: an attacker's machine (a lab host with its own TPM) runs a real agent
    under the victim's name. The victim keeps its status, EK and token and still passes; the
    attempt is a request showing both EKs and the address; a reconnect without approval of
    the untrusted EK leaves it pending approval."""
    three_passing_hosts(fleet)
    victim = fleet.host("esx1")
    mallory = fleet.add("mallory")
    impostor = Agent(
        AgentConfig(
            name="esx1",
            server=fleet.service.url,
            ca=fleet.service.ca,
            tcti=mallory.tcti,
            eventlog=mallory.eventlog,
            bootbank=fleet.root / "mallory" / "bootbank",
            state_dir=fleet.root / "mallory" / "agent",
            interval=1,
            escrow=False,
        )
    )
    with pytest.raises(ApiError) as err:
        impostor.enrol()
    assert err.value.status == 409 and err.value.kind == "TpmChangeRequested"
    assert "keeps its enrolled TPM" in err.value.message
    [held] = [r.getMessage() for r in caplog.records if "held by the server" in r.getMessage()]
    assert "hostseal host accept-tpm esx1 --request" in held
    after = fleet.host("esx1")
    assert after["status"] == "passed"
    assert after["ek"] == victim["ek"] and after["ak"] == victim["ak"]
    assert fleet.attest("esx1").status == "Passed"  # the real agent keeps attesting
    request = _open_request(fleet, "esx1")
    assert request["old_ek_fingerprint"] == victim["ek"]["fingerprint"]  # type: ignore[index]
    assert request["new_ek_fingerprint"] != victim["ek"]["fingerprint"]  # type: ignore[index]
    assert request["address"] == "127.0.0.1" and request["trusted_chain"] is False
    human = fleet.service.cli(fleet.service.viewer, "host", "show", "esx1")
    assert human.returncode == 0, human.stderr
    assert "TPM change request" in human.stdout and str(request["new_ek_fingerprint"])[:16] in (
        human.stdout
    )

    # an operator who wrongly accepts (or pre-plans a reconnect): the untrusted EK still waits
    # for approval, it is never straight to enrolled
    reconnected = fleet.service.cli(
        fleet.service.operator, "host", "reconnect", "esx1", "--reason", "planned swap"
    )
    assert reconnected.returncode == 0, reconnected.stderr
    assert impostor.enrol() == "pending-approval"
    assert fleet.host("esx1")["status"] == "pending-approval"


def test_refusals_each_with_its_own_message(fleet: Fleet) -> None:
    three_passing_hosts(fleet)
    agent1 = fleet.agent("esx1")
    token1 = agent1.state.token()
    ak1, _ = agent1.state.load_ak() or (None, None)
    assert token1 and ak1
    host1 = fleet.hosts["esx1"]

    def evidence(
        challenge: dict[str, object],
        *,
        ak: object = ak1,
        tcti: str = host1.tcti,
        eventlog: bytes | None = None,
    ) -> dict[str, object]:
        nonce_hex = str(challenge["nonce"])
        with open_tpm(tcti) as tpm:
            q = quote(
                tpm,
                ak,
                bytes.fromhex(nonce_hex),
                str(challenge["bank"]),  # type: ignore[arg-type]
                challenge["pcrs"],
            )  # type: ignore[arg-type]
        log = host1.eventlog.read_bytes() if eventlog is None else eventlog
        return EvidenceIn.of_quote(
            nonce=nonce_hex,
            challenge=str(challenge["challenge"]),
            quote=q.attest,
            signature=q.signature,
            pcrs={"sha256": q.pcrs},
            eventlog=log,
        ).model_dump(mode="json")

    with fleet.service.http(token1) as client:
        body = evidence(client.post("/v1/attest/challenge", json={}).json())
        assert client.post("/v1/attest/evidence", json=body).json()["status"] == "Passed"
        replay = client.post("/v1/attest/evidence", json=body)  # the same quote again
        assert replay.status_code == 409
        replay_error = replay.json()
        assert "already" in replay_error["message"] or "used" in replay_error["message"]

        # A quote made with another host's AK (esx2's key, in esx2's TPM).
        agent2 = fleet.agent("esx2")
        ak2, _ = agent2.state.load_ak() or (None, None)
        challenge = client.post("/v1/attest/challenge", json={}).json()
        other = client.post(
            "/v1/attest/evidence", json=evidence(challenge, ak=ak2, tcti=fleet.hosts["esx2"].tcti)
        )
        assert other.status_code == 422
        assert other.json()["error"] == "QuoteFromAnotherHost"
        assert "esx2" in other.json()["message"]

        # A tampered event log: an event's digest changed (the kernel's, PCR 4).
        original = host1.eventlog.read_bytes()
        parsed = parse_event_log(original)
        [kernel] = [e for e in parsed.events if e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"][
            -1:
        ]
        digest = kernel.digests["sha256"]
        challenge = client.post("/v1/attest/challenge", json={}).json()
        log = original.replace(digest, bytes(reversed(digest)))
        tampered = client.post("/v1/attest/evidence", json=evidence(challenge, eventlog=log))
        assert tampered.status_code == 422
        assert tampered.json()["error"] == "QuoteEventLogMismatch"
        assert "PCR 4" in tampered.json()["message"]
        # ... or its text changed while its digest was kept: the kernel command line.
        challenge = client.post("/v1/attest/challenge", json={}).json()
        log = original.replace(b"ro quiet", b"rw quiet")
        assert log != original
        forged = client.post("/v1/attest/evidence", json=evidence(challenge, eventlog=log))
        assert forged.status_code in (200, 422)
        assert forged.json().get("status") != "Passed"

    # An empty policy is refused, never silently accepted.
    empty = fleet.root / "empty.json"
    empty.write_text('{"format": "hostseal-reference-policy", "version": 1, "name": "empty"}')
    refused = fleet.service.cli(
        fleet.service.operator, "policy", "set", "empty", str(empty), "--reason", "test"
    )
    assert refused.returncode != 0
    assert "accept" in refused.stderr.lower() or "empty" in refused.stderr.lower()


def test_expired_nonce(fast_nonce_fleet: Fleet) -> None:
    fleet = fast_nonce_fleet
    enrol_and_approve(fleet, "esx1")
    agent = fleet.agent("esx1")
    token = agent.state.token()
    loaded = agent.state.load_ak()
    assert token and loaded
    host = fleet.hosts["esx1"]
    with fleet.service.http(token) as client:
        challenge = client.post("/v1/attest/challenge", json={}).json()
        with open_tpm(host.tcti) as tpm:
            q = quote(
                tpm,
                loaded[0],
                bytes.fromhex(challenge["nonce"]),
                challenge["bank"],
                challenge["pcrs"],
            )
        time.sleep(1.5)
        late = client.post(
            "/v1/attest/evidence",
            json=EvidenceIn.of_quote(
                nonce=challenge["nonce"],
                challenge=challenge["challenge"],
                quote=q.attest,
                signature=q.signature,
                pcrs={q.bank: q.pcrs},
                eventlog=host.eventlog.read_bytes(),
            ).model_dump(mode="json"),
        )
    assert late.status_code == 409
    assert "expired" in late.json()["message"]
    assert late.json()["error"] != "QuoteFromAnotherHost"
    # The agent just asks again: a fresh nonce works.
    assert fleet.attest("esx1").status == "Warning"


def test_escrow_alarm_follows_the_keys(fleet: Fleet) -> None:
    three_passing_hosts(fleet)
    host = fleet.hosts["esx1"]
    config = fleet.root / "esx1" / "etc"
    config.mkdir(parents=True)
    (config / "hosts").write_text("127.0.0.1 localhost\n")
    ctx = manager.HostContext(host.tcti, host.eventlog, fleet.bootbank("esx1"))
    manager.save(ctx, [config])
    # Reported, not escrowed: the backup alarm is raised and can't be reset by hand.
    assert fleet.attest("esx1", escrow=False).status == "Passed"
    [alarm] = fleet.alarms("esx1")
    assert alarm["kind"] == "tpm-recovery-key-backup"
    reset = fleet.service.cli(
        fleet.service.operator,
        "alarm",
        "reset",
        str(alarm["id"]),
        "--comment",
        "I saved it, trust me",
    )
    assert reset.returncode != 0
    assert fleet.alarms("esx1")
    # The agent escrows: cleared.
    outcome = fleet.attest("esx1")
    assert outcome.escrowed == 1
    fleet.attest("esx1")  # the next report shows the escrowed key matching
    assert fleet.alarms("esx1") == []
    # Rotation: raised again until the new key is escrowed.
    manager.recovery_rotate(ctx)
    fleet.attest("esx1", escrow=False)
    assert [a["kind"] for a in fleet.alarms("esx1")] == ["tpm-recovery-key-backup"]
    fleet.attest("esx1")
    fleet.attest("esx1")
    assert fleet.alarms("esx1") == []
    # A viewer can't read the keys; an admin can, and every read is audited with its reason.
    denied = fleet.service.cli(fleet.service.viewer, "escrow", "get", "esx1", "--reason", "x")
    assert denied.returncode != 0
    got = fleet.service.cli_json(
        fleet.service.admin, "escrow", "get", "esx1", "--reason", "board swap on esx1"
    )
    [key] = manager.recovery_list(ctx, "test")
    assert key.formatted_key in str(got)
    with fleet.service.http(fleet.service.admin) as client:
        audit = client.get("/v1/audit").json()
    entries = audit["entries"] if isinstance(audit, dict) else audit
    reads = [e for e in entries if e["action"].startswith("escrow.")]
    assert any(e.get("reason") == "board swap on esx1" for e in reads)


def test_removed_host_is_kept_with_its_history_and_its_name_enrols_again(fleet: Fleet) -> None:
    """Issue 12 item 8, through the CLI: removing needs a reason, keeps the verdicts (host list
    --removed, host show), revokes the agent's token; the name then enrols as a new host."""
    enrol_and_approve(fleet, "esx1")
    assert fleet.attest("esx1").status == "Warning"
    no_reason = fleet.service.cli(fleet.service.operator, "host", "remove", "esx1")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    blank = fleet.service.cli(fleet.service.operator, "host", "remove", "esx1", "--reason", " ")
    assert blank.returncode != 0 and "A reason is required to remove a host" in blank.stderr
    removed = fleet.service.cli(
        fleet.service.operator, "host", "remove", "esx1", "--reason", "decommissioned, CHG-9"
    )
    assert removed.returncode == 0, removed.stderr
    assert fleet.service.cli_json(fleet.service.viewer, "host", "list") == []
    [tomb] = fleet.service.cli_json(fleet.service.viewer, "host", "list", "--removed")  # type: ignore[misc]
    assert tomb["status"] == "removed" and tomb["removed"]["reason"] == "decommissioned, CHG-9"
    shown = fleet.host("esx1")
    assert [v["status"] for v in shown["verdicts"]] == ["Warning"]  # type: ignore[union-attr]
    with pytest.raises(ApiError) as err:
        fleet.attest("esx1")  # the token was revoked
    assert err.value.status == 401
    # the agent forgets its enrolment after a 401 (Agent.run); here by hand, then a new host
    fleet.agent("esx1").state.forget_enrolment()
    assert fleet.agent("esx1").enrol() == "pending-approval"
    assert fleet.host("esx1")["status"] == "pending-approval"
