"""Real quotes from the corpus verify, and their sources' negative cases are refused, each with
its own error and message (go-tpm-tools GCE COS 85, go-attestation Windows GCP, cmc, keylime)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hostseal.attest.errors import (
    AttestError,
    NonceMismatch,
    NotAQuote,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    QuoteEventLogMismatch,
    QuoteSignatureInvalid,
)
from hostseal.attest.quote import verify_quote
from hostseal.attest.tpm_structures import (
    ALG_RSASSA,
    HASHES_BY_NAME,
    Signature,
    parse_attest,
    parse_signature,
)
from hostseal.attest.tpmkey import load_ak_public
from hostseal.measure import EventLogReplayMismatch, parse_event_log

pytestmark = pytest.mark.corpus

COS = [f"cos85-{n}-{b}" for n in ("nonce9009", "no-nonce") for b in ("sha1", "sha256", "sha384")]
ALL = [*COS, "windows-gcp", "cmc", "keylime"]
WITH_LOG = [*COS, "windows-gcp", "cmc"]


def _verify(v, **changes):  # type: ignore[no-untyped-def]
    v = v.with_(**changes) if changes else v
    return verify_quote(
        load_ak_public(v.ak), v.attest, v.signature, nonce=v.nonce, pcrs=v.pcrs, eventlog=v.eventlog
    )


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1 :]


@pytest.mark.parametrize("name", ALL)
def test_real_quote_verifies(vectors, name: str) -> None:  # type: ignore[no-untyped-def]
    v = vectors[name]
    result = _verify(v)
    expected = ("quote", "signature", "nonce", "pcr_selection", "pcr_digest")
    assert result.checks == ((*expected, "eventlog") if v.eventlog else expected)
    assert result.quote.extra_data == v.nonce
    assert result.pcrs == v.pcrs
    assert (result.eventlog is not None) == (v.eventlog is not None)


def test_cos85_quotes_hash_the_pcrs_with_the_signing_hash(vectors) -> None:  # type: ignore[no-untyped-def]
    """GCE signs with RSASSA-SHA256 whatever bank it quotes: pcrDigest is SHA-256 of SHA-1 (and
    SHA-384) PCR values; Windows signs with SHA-1 and so hashes with SHA-1."""
    for name in COS:
        result = _verify(vectors[name])
        assert result.signature.scheme == "rsassa"
        assert result.signature.hash.name == "sha256"
        assert len(result.quote.pcr_digest) == 32
        assert [s.bank for s in result.quote.selection] == [name.rsplit("-", 1)[1]]
        assert result.quote.selection[0].pcrs == tuple(range(24))
        assert result.quote.clock_info.reset_count == 10
    windows = _verify(vectors["windows-gcp"])
    assert windows.signature.hash.name == "sha1"
    assert len(windows.quote.pcr_digest) == 20


def test_keylime_ak_name_is_the_tpm_name(vectors, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    ak = load_ak_public(vectors["keylime"].ak)
    assert ak.name == (corpus / "keylime/test-data/files/ak.name").read_bytes()
    pem = load_ak_public((corpus / "keylime/test-data/files/akpub.pem").read_bytes())
    assert pem.name is None
    assert pem.key.public_numbers() == ak.key.public_numbers()  # type: ignore[union-attr]


# --- the sources' negative cases -------------------------------------------------------------


def test_cmc_invalid_signature_is_refused(vectors) -> None:  # type: ignore[no-untyped-def]
    v = vectors["cmc"]
    with pytest.raises(QuoteSignatureInvalid) as info:
        _verify(v, signature=v.extra["invalid_signature"])
    assert info.value.message == (
        "The quote's signature (RSASSA-PKCS1-v1_5 with sha256) does not verify with the "
        "attestation key (AK): the signature does not match the quote."
    )
    assert info.value.remedy.startswith("The quote was altered, or signed by another key")
    assert info.value.details["checks"] == {
        "quote": "passed",
        "signature": "failed",
        "nonce": "not run",
        "pcr_selection": "not run",
        "pcr_digest": "not run",
        "eventlog": "not run",
    }


def test_cmc_invalid_nonce_is_refused(vectors) -> None:  # type: ignore[no-untyped-def]
    v = vectors["cmc"]
    with pytest.raises(NonceMismatch) as info:
        _verify(v, nonce=v.extra["invalid_nonce"])
    assert info.value.message == (
        "The quote was not made for this challenge: its nonce (extraData, 8 bytes) is not the "
        "nonce the verifier sent (8 bytes)."
    )
    assert info.value.details["expected"] == "6db48f3e33c9792a"
    assert info.value.details["actual"] == "db6c3c042fa12645"


def _first(v) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    bank = next(iter(v.pcrs))
    return bank, min(v.pcrs[bank])


def _wrong_nonce(v):  # type: ignore[no-untyped-def]
    return v.with_(nonce=v.nonce + b"\x01"), NonceMismatch, "The quote was not made for this"


def _changed_pcr(v):  # type: ignore[no-untyped-def]
    bank, pcr = _first(v)
    pcrs = {b: dict(values) for b, values in v.pcrs.items()}
    pcrs[bank][pcr] = _flip(pcrs[bank][pcr], 0)
    hash_name = _signing_hash(v)
    return (
        v.with_(pcrs=pcrs),
        PcrDigestMismatch,
        f"The PCR values presented are not the values the TPM quoted: their {hash_name} digest",
    )


def _signing_hash(v) -> str:  # type: ignore[no-untyped-def]
    return parse_signature(v.signature).hash.name


def _extra_pcr(v):  # type: ignore[no-untyped-def]
    bank = next(iter(v.pcrs))
    free = [n for n in range(24) if n not in v.pcrs[bank]]
    pcrs = {b: dict(values) for b, values in v.pcrs.items()}
    if free:
        size = HASHES_BY_NAME[bank].size
        pcrs[bank][free[0]] = bytes(size)
        named = f"{bank} PCR {free[0]}"
    else:
        other = "sha256" if bank != "sha256" else "sha1"
        pcrs[other] = {0: bytes(HASHES_BY_NAME[other].size)}
        named = f"{other} PCR 0"
    return v.with_(pcrs=pcrs), PcrSelectionMismatch, f"presented but not quoted: {named}."


def _missing_pcr(v):  # type: ignore[no-untyped-def]
    bank = next(iter(v.pcrs))
    last = max(v.pcrs[bank])
    pcrs = {b: dict(values) for b, values in v.pcrs.items()}
    del pcrs[bank][last]
    return v.with_(pcrs=pcrs), PcrSelectionMismatch, f": missing quoted {bank} PCR {last}."


def _bad_signature(v):  # type: ignore[no-untyped-def]
    return (
        v.with_(signature=_flip(v.signature, len(v.signature) - 1)),
        QuoteSignatureInvalid,
        "does not verify with the attestation key (AK): the signature does not match",
    )


def _tampered_quote(v):  # type: ignore[no-untyped-def]
    last = len(parse_attest(v.attest).raw) - 1  # the pcrDigest's last byte
    return (
        v.with_(attest=_flip(v.attest, last)),
        QuoteSignatureInvalid,
        "the signature does not match the quote.",
    )


def _tampered_eventlog(v):  # type: ignore[no-untyped-def]
    bank = next(iter(v.pcrs))
    log = parse_event_log(v.eventlog)
    event = next(e for e in log.events if e.extended and e.pcr in v.pcrs[bank] and e.pcr < 8)
    where = v.eventlog.find(event.digests[bank], event.offset)
    assert where > 0
    return (
        v.with_(eventlog=_flip(v.eventlog, where)),
        QuoteEventLogMismatch,
        f"The event log does not replay to the quoted PCR values: {bank} PCR {event.pcr} ",
    )


MUTATIONS: dict[str, Callable] = {  # type: ignore[type-arg]
    "wrong nonce": _wrong_nonce,
    "changed PCR value": _changed_pcr,
    "extra PCR presented": _extra_pcr,
    "missing PCR": _missing_pcr,
    "bad signature": _bad_signature,
    "tampered quote": _tampered_quote,
    "tampered event log": _tampered_eventlog,
}
CASES = [
    pytest.param(name, mutation, id=f"{name}: {mutation}")
    for name in ALL
    for mutation in MUTATIONS
    if mutation != "tampered event log" or name in WITH_LOG
]


@pytest.mark.parametrize(("name", "mutation"), CASES)
def test_negative_case_is_refused(vectors, name: str, mutation: str) -> None:  # type: ignore[no-untyped-def]
    changed, error, text = MUTATIONS[mutation](vectors[name])
    with pytest.raises(error) as info:
        _verify(changed)
    assert isinstance(info.value, AttestError)
    assert text in info.value.message
    assert info.value.remedy
    checks = info.value.details["checks"]
    assert list(checks.values()).count("failed") == 1
    if error is QuoteEventLogMismatch:
        assert isinstance(info.value, EventLogReplayMismatch)
        assert info.value.to_dict()["mismatches"]


def test_tampered_cmc_log_names_the_pcr_and_its_events(vectors) -> None:  # type: ignore[no-untyped-def]
    changed, _, _ = _tampered_eventlog(vectors["cmc"])
    with pytest.raises(QuoteEventLogMismatch) as info:
        _verify(changed)
    (mismatch,) = info.value.mismatches
    assert (mismatch.bank, mismatch.pcr) == ("sha256", 1)
    assert mismatch.actual == vectors["cmc"].pcrs["sha256"][1]
    assert len(mismatch.events) == 9
    assert info.value.message == (
        "The event log does not replay to the quoted PCR values: sha256 PCR 1 differ from the "
        "replayed log."
    )


@pytest.mark.parametrize(
    "device",
    [
        "test_verify_attestation_dell_xps_13",
        "test_verify_attestation_lenovo_carbon_x1",
        "test_verify_attestation_surface_pro_4",
        "test_verify_tpm_with_ecc_public_area_type",
    ],
)
def test_windows_hello_certify_is_not_a_quote(corpus: Path, device: str) -> None:
    folder = corpus / "py_webauthn/derived" / device
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    aik = x509.load_der_x509_certificate((folder / "x5c_0.der").read_bytes()).public_key()
    pem = aik.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    certify = (folder / "certInfo_tpms_attest.bin").read_bytes()
    signature = Signature(ALG_RSASSA, 0x0004, rsa_sig=(folder / "sig.bin").read_bytes())
    with pytest.raises(NotAQuote) as info:
        verify_quote(
            load_ak_public(pem), certify, signature.to_bytes(), nonce=b"", pcrs={"sha256": {}}
        )
    assert info.value.message == (
        "The attestation is not a quote: its type is TPM_ST_ATTEST_CERTIFY (0x8017, made by "
        "TPM2_Certify), not TPM_ST_ATTEST_QUOTE (0x8018, made by TPM2_Quote)."
    )
    assert info.value.details["checks"]["quote"] == "failed"
    # The certified key's name is nameAlg || H(pubArea): the same TPM name hostseal computes.
    attest = parse_attest(certify)
    assert attest.certify is not None
    public = load_ak_public((folder / "pubArea_tpmt_public.bin").read_bytes())
    assert attest.certify.name == public.name
