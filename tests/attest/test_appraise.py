"""Appraisal: full judgement, and its reuse for evidence of the same boot, log and policy —
never reused across a reboot, a new log or a new policy, and never skipping a check of the quote."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hostseal.attest import (
    NonceMismatch,
    PcrDigestMismatch,
    QuoteEventLogMismatch,
    QuoteSignatureInvalid,
    ReferencePolicy,
    capture_policy,
    load_ak_public,
)
from hostseal.attest.appraise import (
    Appraisal,
    EventLogUnavailable,
    Judged,
    appraisal_key,
    appraise,
    policy_digest,
)
from hostseal.lab import BootConfig
from hostseal.measure import parse_event_log
from server._softtpm import SoftTpm

PCRS = list(range(10))


@pytest.fixture
def tpm() -> SoftTpm:
    return SoftTpm()


@pytest.fixture
def policy(tpm: SoftTpm) -> ReferencePolicy:
    return capture_policy("golden", parse_event_log(tpm.eventlog), tpm.pcrs)


def _appraise(
    tpm: SoftTpm, policy: ReferencePolicy, *, judged: Judged | None = None, **kw: object
) -> Appraisal:
    nonce = secrets.token_bytes(32)
    attest, signature, values = tpm.quote(nonce, PCRS)
    args: dict[str, object] = {"eventlog": tpm.eventlog, **kw}
    return appraise(
        load_ak_public(tpm.ak_public),
        attest,
        signature,
        nonce=nonce,
        pcrs=values,
        policy=policy,
        judged=judged,
        **args,  # type: ignore[arg-type]
    )


def test_full_appraisal_then_reuse_for_the_same_boot(tpm: SoftTpm, policy: ReferencePolicy) -> None:
    first = _appraise(tpm, policy)
    assert (first.status, first.reused) == ("Passed", False)
    assert first.verdict is not None and first.eventlog is not None
    assert first.eventlog_sha256 == hashlib.sha256(tpm.eventlog).hexdigest()

    again = _appraise(  # named by digest only: a reused appraisal does not need the log
        tpm, policy, judged=first.judged, eventlog=None,
        eventlog_sha256=first.eventlog_sha256,
    )  # fmt: skip
    assert (again.status, again.messages, again.reused) == ("Passed", first.messages, True)
    assert again.key == first.key
    assert again.verdict is None


def test_a_failed_judgement_is_reused_as_failed(tpm: SoftTpm, policy: ReferencePolicy) -> None:
    tpm.reboot(BootConfig(secure_boot=False))
    first = _appraise(tpm, policy)
    assert first.status == "Failed"
    again = _appraise(tpm, policy, judged=first.judged)
    assert again.reused and again.status == "Failed" and again.messages == first.messages


def test_no_reuse_after_a_reboot_a_new_policy_or_another_log(
    tpm: SoftTpm, policy: ReferencePolicy
) -> None:
    judged = _appraise(tpm, policy).judged
    stricter = replace(policy, require_secure_boot=not policy.require_secure_boot)
    assert policy_digest(stricter) != policy_digest(policy)
    assert not _appraise(tpm, stricter, judged=judged).reused

    tpm.reboot(BootConfig(secure_boot=False))  # other PCR values: other pcrDigest
    rebooted = _appraise(tpm, policy, judged=judged)
    assert (rebooted.reused, rebooted.status) == (False, "Failed")
    assert rebooted.key != judged.key


def test_a_log_that_no_longer_replays_is_refused_even_when_named_by_digest(
    tpm: SoftTpm, policy: ReferencePolicy
) -> None:
    judged = _appraise(tpm, policy).judged
    old_log = tpm.eventlog
    tpm.reboot(BootConfig(secure_boot=False))
    with pytest.raises(QuoteEventLogMismatch):  # the agent claims the old log after a reboot
        _appraise(
            tpm, policy, judged=judged, eventlog=old_log,
            eventlog_sha256=hashlib.sha256(old_log).hexdigest(),
        )  # fmt: skip


def test_a_log_named_by_digest_must_be_that_log(tpm: SoftTpm, policy: ReferencePolicy) -> None:
    with pytest.raises(EventLogUnavailable):  # named by digest, not given, and needed
        _appraise(tpm, policy, eventlog=None, eventlog_sha256="00" * 32)
    judged = _appraise(tpm, policy).judged
    tpm.reboot(BootConfig(secure_boot=False))  # the judgement cannot be reused: the log is needed
    with pytest.raises(EventLogUnavailable):
        _appraise(
            tpm, policy, judged=judged, eventlog=None,
            eventlog_sha256=hashlib.sha256(tpm.eventlog).hexdigest(),
        )  # fmt: skip
    with pytest.raises(EventLogUnavailable):  # bytes and a digest that disagree
        _appraise(tpm, policy, eventlog_sha256="00" * 32)


def test_reuse_never_skips_a_check_of_the_quote(tpm: SoftTpm, policy: ReferencePolicy) -> None:
    judged = _appraise(tpm, policy).judged
    ak = load_ak_public(tpm.ak_public)
    nonce = secrets.token_bytes(32)
    attest, signature, values = tpm.quote(nonce, PCRS)
    other_key = ec.generate_private_key(ec.SECP256R1())
    _, forged, _ = tpm.quote(nonce, PCRS, key=other_key)
    common = {"policy": policy, "eventlog": tpm.eventlog, "judged": judged}
    with pytest.raises(QuoteSignatureInvalid):
        appraise(ak, attest, forged, nonce=nonce, pcrs=values, **common)  # type: ignore[arg-type]
    with pytest.raises(NonceMismatch):
        appraise(ak, attest, signature, nonce=bytes(32), pcrs=values, **common)  # type: ignore[arg-type]
    # values presented that are not the quoted ones: refused in a full appraisal; on reuse
    # they are not used at all (the verdict is about the values the TPM signed)
    wrong = {"sha256": {**values["sha256"], 0: bytes(32)}}
    with pytest.raises(PcrDigestMismatch):
        appraise(
            ak, attest, signature, nonce=nonce, pcrs=wrong, policy=policy, eventlog=tpm.eventlog
        )
    reused = appraise(ak, attest, signature, nonce=nonce, pcrs=wrong, **common)  # type: ignore[arg-type]
    assert reused.reused and reused.pcrs == {} and reused.status == judged.status


def test_the_key_binds_selection_digest_hash_and_log(tpm: SoftTpm) -> None:
    from hostseal.attest import parse_quote

    attest, _, _ = tpm.quote(bytes(32), PCRS)
    quote = parse_quote(attest)
    base = appraisal_key("p", quote, "sha256", "l")
    assert base == appraisal_key("p", quote, "sha256", "l")
    other_selection = parse_quote(tpm.quote(bytes(32), [0, 1])[0])
    assert len({
        base,
        appraisal_key("q", quote, "sha256", "l"),
        appraisal_key("p", quote, "sha384", "l"),
        appraisal_key("p", quote, "sha256", "m"),
        appraisal_key("p", quote, "sha256", None),
        appraisal_key("p", other_selection, "sha256", "l"),
    }) == 6  # fmt: skip
