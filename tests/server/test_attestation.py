"""Challenge, evidence, verdicts, the attestation alarm, refusals, staleness."""

from __future__ import annotations

import base64
from datetime import timedelta

from hostseal.lab import BootConfig
from hostseal.server.clock import FixedClock
from hostseal.server.http.app import run_housekeeping
from hostseal.server.reporting import mark_stale

from ._softtpm import SoftTpm
from .conftest import Server


def _capture(server: Server, name: str = "golden", host: str = "host1") -> None:
    response = server.api.post(
        "/v1/policies/capture",
        token=server.operator,
        json={"name": name, "host": host, "reason": "golden"},
    )
    assert response.status_code == 200, response.text


def test_challenge_is_a_fresh_32_byte_nonce_with_the_default_pcrs(
    server: Server, agent: str
) -> None:
    first, second = server.challenge(agent), server.challenge(agent)
    assert len(bytes.fromhex(first["nonce"])) == 32
    assert first["nonce"] != second["nonce"]
    assert first["bank"] == "sha256"
    assert first["pcrs"] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert first["expires_at"] == (server.clock.now() + timedelta(seconds=120)).isoformat()


def test_without_policy_the_verdict_is_a_warning_never_passed(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    verdict = server.attest(agent, tpm)
    assert verdict["status"] == "Warning"
    assert verdict["messages"] == [
        "No reference policy is assigned to this host: its quote and event log verified, but its "
        "measurements were not compared with known-good values. Assign one: hostseal policy "
        "capture NAME --host HOST --reason WHY, or hostseal policy assign NAME HOST --reason WHY."
    ]
    host = server.host("host1")
    assert host["status"] == "warning"
    assert host["last_attested_at"] == server.clock.now().isoformat()


def test_policy_capture_then_pass_then_secure_boot_off_fails_and_raises_the_alarm(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    server.attest(agent, tpm)
    _capture(server)
    challenge = server.challenge(agent)
    assert 7 in challenge["pcrs"] and 4 in challenge["pcrs"]
    assert server.attest(agent, tpm)["status"] == "Passed"
    assert server.host("host1")["status"] == "passed"
    assert server.alarms() == []

    tpm.reboot(BootConfig(secure_boot=False))
    server.clock.advance(timedelta(minutes=5))
    verdict = server.attest(agent, tpm)
    assert verdict["status"] == "Failed"
    assert any("Secure Boot" in m for m in verdict["messages"])
    host = server.host("host1")
    assert host["status"] == "failed"
    assert host["message"] == verdict["messages"][0]
    [alarm] = server.alarms()
    assert alarm["kind"] == "host-tpm-attestation"
    assert alarm["title"] == "Host TPM attestation alarm"
    assert alarm["state"] == "raised"
    assert "Secure Boot" in alarm["message"]

    # a second failure keeps the same alarm
    server.attest(agent, tpm)
    assert len(server.alarms(state="active")) == 1

    tpm.reboot(BootConfig())
    assert server.attest(agent, tpm)["status"] == "Passed"
    assert server.alarms(state="active") == []
    [cleared] = server.alarms()
    assert cleared["state"] == "cleared"
    assert [e["event"] for e in cleared["history"]] == ["raised", "cleared"]
    statuses = [v["status"] for v in server.host("host1")["verdicts"]]
    assert statuses == ["Passed", "Failed", "Failed", "Passed", "Warning"]


def test_replayed_quote_is_refused_and_recorded(server: Server, tpm: SoftTpm, agent: str) -> None:
    challenge = server.challenge(agent)
    assert server.evidence(agent, tpm, challenge=challenge).status_code == 200
    replay = server.evidence(agent, tpm, challenge=challenge)
    assert replay.status_code == 409
    body = replay.json()
    assert body["error"] == "NonceReplayed"
    assert "already used: this is a replayed quote" in body["message"]
    event = server.audit(action="attest.refused")[0]
    assert event["details"]["error"] == "NonceReplayed"
    assert event["host"] == "host1"
    # a refused nonce does not change the host's status
    assert server.host("host1")["status"] == "warning"


def test_expired_nonce_is_refused(server: Server, tpm: SoftTpm, agent: str) -> None:
    challenge = server.challenge(agent)
    server.clock.advance(timedelta(seconds=121))
    late = server.evidence(agent, tpm, challenge=challenge)
    assert late.status_code == 409
    assert late.json()["error"] == "NonceExpired"
    assert "expired at" in late.json()["message"]


def test_nonce_issued_to_another_host_is_unknown(server: Server, tpm: SoftTpm, agent: str) -> None:
    other_tpm = SoftTpm()
    other = server.enrol("host2", other_tpm)
    server.api.post("/v1/hosts/host2/approve", token=server.operator, json={"reason": "lab"})
    others = server.challenge(other["agent_token"])
    response = server.evidence(agent, tpm, challenge=others)
    assert response.status_code == 409
    assert response.json()["error"] == "NonceUnknown"
    assert "was not issued to host 'host1'" in response.json()["message"]
    never = server.evidence(agent, tpm, challenge={"nonce": "ab" * 32, "challenge": "bm9uZQ=="})
    assert never.json()["error"] == "NonceUnknown"
    # a genuine ticket with another nonce in the quote: the ticket does not cover it
    mine = server.challenge(agent)
    swapped = server.evidence(agent, tpm, challenge={**mine, "nonce": "cd" * 32})
    assert swapped.json()["error"] == "NonceUnknown"
    # a ticket changed by one bit: its MAC fails
    ticket = bytearray(base64.urlsafe_b64decode(mine["challenge"]))
    ticket[10] ^= 1
    forged = {**mine, "challenge": base64.urlsafe_b64encode(bytes(ticket)).decode()}
    assert server.evidence(agent, tpm, challenge=forged).json()["error"] == "NonceUnknown"
    assert server.evidence(agent, tpm, challenge=mine).status_code == 200


def test_quote_signed_by_another_hosts_ak_is_refused(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    other_tpm = SoftTpm()
    token2 = server.enrol("host2", other_tpm)["agent_token"]
    approved = server.api.post(
        "/v1/hosts/host2/approve", token=server.operator, json={"reason": "lab host"}
    )
    assert approved.status_code == 200, approved.text
    server.attest(token2, other_tpm)  # the server has seen host2's AK sign (its signer index)
    response = server.evidence(agent, other_tpm)  # host2's quote, sent with host1's token
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "QuoteFromAnotherHost"
    assert body["message"] == (
        "The quote sent for host 'host1' was signed by the attestation key of host 'host2': "
        "it is evidence from another machine, refused."
    )
    host = server.host("host1")
    assert host["status"] == "failed"
    assert host["verdicts"][0]["error"] == "QuoteFromAnotherHost"
    assert server.alarms(state="active")[0]["kind"] == "host-tpm-attestation"


def test_quote_signed_by_an_unknown_key_is_refused(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    response = server.evidence(agent, tpm, key=SoftTpm().ak)
    assert response.status_code == 422
    assert response.json()["error"] == "QuoteSignatureInvalid"


def test_tampered_event_log_is_refused_and_recorded(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    tampered = SoftTpm(boot=BootConfig(bootloader="grub-2.12-patched")).eventlog
    response = server.evidence(agent, tpm, eventlog=tampered)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "QuoteEventLogMismatch"
    assert body["message"].startswith("The event log does not replay to the quoted PCR values")
    verdict = server.host("host1")["verdicts"][0]
    assert verdict["status"] == "Failed"
    assert verdict["error"] == "QuoteEventLogMismatch"


def test_malformed_evidence_is_refused(server: Server, tpm: SoftTpm, agent: str) -> None:
    challenge = server.challenge(agent)
    response = server.api.post(
        "/v1/attest/evidence",
        token=agent,
        json={"nonce": challenge["nonce"], "quote": "AAAA", "signature": "AAAA", "pcrs": {}},
    )
    assert response.status_code == 422
    bad_nonce = server.api.post(
        "/v1/attest/evidence",
        token=agent,
        json={"nonce": "xyz", "quote": "", "signature": "", "pcrs": {}},
    )
    assert bad_nonce.status_code == 422
    assert bad_nonce.json()["error"] == "RequestInvalid"


def test_host_that_stops_reporting_becomes_not_reporting(
    server: Server, clock: FixedClock, tpm: SoftTpm, agent: str
) -> None:
    server.attest(agent, tpm)
    settings = server.ctx.settings  # not reporting after 15 minutes
    with server.ctx.sessions.begin() as session:
        assert mark_stale(session, clock.now() + timedelta(minutes=14), settings) == []
    with server.ctx.sessions.begin() as session:
        marked = mark_stale(session, clock.now() + timedelta(minutes=16), settings)
    assert marked == ["host1"]
    host = server.host("host1")
    assert host["status"] == "not-reporting"
    assert host["last_verdict"] == "Warning"  # not failed: the last verdict is kept
    # its own alarm (issue 12 item 15), not the attestation alarm
    assert [a["kind"] for a in server.alarms()] == ["host-not-reporting"]
    clock.advance(timedelta(minutes=20))
    assert server.attest(agent, tpm)["status"] == "Warning"
    assert server.host("host1")["status"] == "warning"
    assert server.alarms(state="active") == []


def test_housekeeping_uses_the_settings_and_skips_hosts_waiting_for_an_operator(
    server: Server, clock: FixedClock, tpm: SoftTpm, agent: str
) -> None:
    server.enrol("pending", SoftTpm())
    clock.advance(timedelta(minutes=16))
    assert run_housekeeping(server.ctx) == ["host1"]
    assert server.host("pending")["status"] == "pending-approval"
    assert run_housekeeping(server.ctx) == []
    assert server.audit(action="host.not-reporting")[0]["host"] == "host1"


def test_housekeeping_prunes_old_enrolments(server: Server, clock: FixedClock, agent: str) -> None:
    from sqlalchemy import func, select

    from hostseal.server.storage.models import Enrolment

    server.enrol_start("later", SoftTpm())

    def count() -> int:
        with server.ctx.sessions() as session:
            return session.scalar(select(func.count()).select_from(Enrolment)) or 0

    assert count() == 2
    clock.advance(timedelta(hours=23))
    run_housekeeping(server.ctx)
    assert count() == 2
    clock.advance(timedelta(hours=2))
    run_housekeeping(server.ctx)
    assert count() == 0


def test_the_log_is_sent_once_per_boot_then_named_by_its_digest(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    import hashlib

    assert server.challenge(agent)["eventlog_sha256"] is None  # the server holds no log yet
    server.attest(agent, tpm)
    digest = hashlib.sha256(tpm.eventlog).hexdigest()
    assert server.challenge(agent)["eventlog_sha256"] == digest
    _capture(server)
    # a new policy: appraised in full with the log the server holds
    named = server.evidence(agent, tpm, send_digest=True)
    assert named.status_code == 200, named.text
    assert named.json()["status"] == "Passed"
    again = server.evidence(agent, tpm, send_digest=True)  # the same boot: judgement reused
    assert again.json() == named.json()

    tpm.reboot(BootConfig(secure_boot=False))  # a new boot, a new log the server lacks
    before = len(server.host("host1")["verdicts"])
    unknown = server.evidence(agent, tpm, send_digest=True)
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "EventLogUnknown"
    assert "Send the event log itself" in unknown.json()["remedy"]
    assert len(server.host("host1")["verdicts"]) == before  # nothing stored
    failed = server.evidence(agent, tpm)
    assert failed.json()["status"] == "Failed"
    assert any("Secure Boot" in m for m in failed.json()["messages"])
    assert server.challenge(agent)["eventlog_sha256"] == hashlib.sha256(tpm.eventlog).hexdigest()
    # the same failed boot again, by digest: the same verdict, the alarm kept
    repeated = server.evidence(agent, tpm, send_digest=True)
    assert repeated.json() == failed.json()
    assert len(server.alarms(state="active")) == 1

    tpm.reboot(BootConfig())
    assert server.attest(agent, tpm)["status"] == "Passed"
    assert server.alarms(state="active") == []


def test_a_policy_change_is_applied_to_a_boot_already_judged(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    server.attest(agent, tpm)
    _capture(server)
    assert server.evidence(agent, tpm, send_digest=True).json()["status"] == "Passed"
    policy = server.api.get("/v1/policies/golden", token=server.viewer).json()
    document = policy["policy"]
    changed = {**document, "kernel_cmdlines": ["nothing matches this"]}
    put = server.api.put(
        "/v1/policies/golden", token=server.operator, json=changed, params={"reason": "r"}
    )
    assert put.status_code == 200, put.text
    verdict = server.evidence(agent, tpm, send_digest=True).json()
    assert verdict["status"] != "Passed", verdict
