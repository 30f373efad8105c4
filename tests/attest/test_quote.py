"""verify_quote on synthetic quotes (signed with ``cryptography`` keys): every scheme and hash,
the AK checks, selection corner cases, and the text of every message."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hostseal.attest.errors import (
    AkUnsuitable,
    AttestError,
    NonceMismatch,
    NotAQuote,
    PcrSelectionMismatch,
    QuoteMalformed,
    QuoteSignatureInvalid,
)
from hostseal.attest.quote import CHECKS, parse_quote, pcr_digest, verify_quote
from hostseal.attest.tpm_structures import (
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSAPSS,
    ALG_RSASSA,
    PcrSelection,
    encode_quote_attest,
    parse_signature,
)
from hostseal.attest.tpmkey import AkPublic, load_ak_public
from hostseal.measure import EventLogError, EventLogWriter, parse_event_log, replay

SHA1, SHA256, SHA384 = 0x0004, 0x000B, 0x000C


def _verify(v, **kwargs):  # type: ignore[no-untyped-def]
    args = {"nonce": v.nonce, "pcrs": v.pcrs, "eventlog": v.eventlog, **kwargs}
    return verify_quote(load_ak_public(v.ak), v.attest, v.signature, **args)


@pytest.mark.parametrize(
    ("scheme", "hash_name", "salt"),
    [
        (ALG_RSASSA, "sha256", None),
        (ALG_RSASSA, "sha1", None),
        (ALG_RSASSA, "sha384", None),
        (ALG_RSASSA, "sha512", None),
        (ALG_RSAPSS, "sha256", None),  # salt = digest length: libtpms, FIPS 186-4 TPMs
        (ALG_RSAPSS, "sha256", 256 - 32 - 2),  # salt = the largest the key allows (TPM spec)
        (ALG_RSAPSS, "sha384", 0),
    ],
)
def test_rsa_schemes_verify(forge, rsa_key, scheme: int, hash_name: str, salt: int | None) -> None:  # type: ignore[no-untyped-def]
    made = forge.quote(rsa_key, scheme=scheme, hash_name=hash_name, pss_salt=salt)
    result = _verify(made.vector)
    assert result.checks == CHECKS[:5]
    assert result.signature.sig_alg == scheme
    assert result.signature.hash.name == hash_name
    assert len(result.quote.pcr_digest) == result.signature.hash.size


@pytest.mark.parametrize(
    ("curve", "hash_name"),
    [(ec.SECP256R1(), "sha256"), (ec.SECP384R1(), "sha384"), (ec.SECP256R1(), "sha1")],
)
def test_ecdsa_verifies(forge, curve: ec.EllipticCurve, hash_name: str) -> None:  # type: ignore[no-untyped-def]
    made = forge.quote(ec.generate_private_key(curve), hash_name=hash_name)
    result = _verify(made.vector)
    assert result.signature.scheme == "ecdsa"
    assert result.ak.key_type == "ecc"
    assert result.checks == CHECKS[:5]


def test_pem_ak_and_signature_object(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key).vector
    pem = ecc_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ak = load_ak_public(pem)
    assert ak.name is None and ak.public is None
    result = verify_quote(ak, v.attest, parse_signature(v.signature), nonce=v.nonce, pcrs=v.pcrs)
    assert result.ak.to_dict() == {"type": "ecc", "name": None, "curve": "secp256r1"}


def test_multi_bank_selection_hashes_in_selection_order(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    selection = (PcrSelection(SHA256, (0, 7)), PcrSelection(SHA1, (1, 2)))
    v = forge.quote(ecc_key, selection=selection).vector
    reordered = {"sha1": v.pcrs["sha1"], "sha256": dict(reversed(v.pcrs["sha256"].items()))}
    result = _verify(v, pcrs=reordered)
    assert list(result.pcrs) == ["sha256", "sha1"]
    expected = pcr_digest(selection, v.pcrs, "sha256")
    assert result.quote.pcr_digest == expected


def test_result_is_json_ready(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    result = _verify(forge.quote(ecc_key).vector)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["verified"] is True
    assert data["checks"] == {
        "quote": "passed",
        "signature": "passed",
        "nonce": "passed",
        "pcr_selection": "passed",
        "pcr_digest": "passed",
        "eventlog": "not requested",
    }
    assert data["quote"]["selection"] == [{"bank": "sha256", "pcrs": [0, 7]}]
    assert data["quote"]["extra_data"] == "0badc0de"
    assert data["ak"]["restricted_signing"] is True


# --- the event log ---------------------------------------------------------------------------


def _logged_quote(forge, key):  # type: ignore[no-untyped-def]
    writer = EventLogWriter(banks=("sha256",))
    writer.add(0, 8, b"firmware version 1")
    writer.add(7, 4, b"\0\0\0\0")
    raw = writer.to_bytes()
    values = replay(parse_event_log(raw))["sha256"]
    selection = (PcrSelection(SHA256, (0, 7)),)
    pcrs = {"sha256": {0: values[0], 7: values[7]}}
    attest = encode_quote_attest(
        extra_data=b"n", selection=selection, pcr_digest=pcr_digest(selection, pcrs, "sha256")
    )
    return forge.tpmt_public(key), attest, forge.sign(key, attest), pcrs, raw


def test_eventlog_bytes_or_parsed(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    public, attest, sig, pcrs, raw = _logged_quote(forge, ecc_key)
    ak = load_ak_public(public)
    for log in (raw, parse_event_log(raw)):
        result = verify_quote(ak, attest, sig, nonce=b"n", pcrs=pcrs, eventlog=log)
        assert result.checks == CHECKS
        assert result.eventlog is not None and len(result.eventlog.events) == 3


def test_eventlog_without_the_quoted_bank(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    public, attest, sig, pcrs, _ = _logged_quote(forge, ecc_key)
    sha1_log = EventLogWriter(banks=("sha1",))
    sha1_log.add(0, 8, b"x")
    with pytest.raises(EventLogError) as info:
        verify_quote(
            load_ak_public(public), attest, sig, nonce=b"n", pcrs=pcrs, eventlog=sha1_log.to_bytes()
        )
    assert info.value.message == (
        "The event log and the PCR values share no bank: the log has sha1, the PCRs are sha256."
    )
    assert info.value.details["checks"]["eventlog"] == "failed"


def test_unparseable_eventlog(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    public, attest, sig, pcrs, _ = _logged_quote(forge, ecc_key)
    with pytest.raises(EventLogError, match="The event log is empty"):
        verify_quote(load_ak_public(public), attest, sig, nonce=b"n", pcrs=pcrs, eventlog=b"")


# --- failures and their messages -------------------------------------------------------------


def test_ak_that_is_not_restricted(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key, attributes=0x00040072).vector  # sign, not restricted
    with pytest.raises(AkUnsuitable) as info:
        _verify(v)
    assert info.value.message == (
        "The key given as the AK is not a restricted signing key (objectAttributes "
        "0x00040072): the TPM would sign anything with it, so a quote it signs proves nothing."
    )
    assert info.value.remedy.startswith("Use the host's attestation key")


def test_wrong_magic_is_not_a_quote(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key).vector
    with pytest.raises(NotAQuote) as info:
        _verify(v.with_(attest=b"\x00\x00\x00\x00" + v.attest[4:]))
    assert info.value.message == (
        "The attestation does not start with TPM_GENERATED_VALUE (0xff544347) but with "
        "0x00000000: it was not generated by a TPM."
    )
    assert info.value.remedy == (
        "Send the TPMS_ATTEST that TPM2_Quote returned (tpm2_quote -m FILE), unchanged; an "
        "attestation of another kind says nothing about the PCRs."
    )


def test_creation_attestation_is_not_a_quote(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key).vector
    creation = v.attest[:4] + b"\x80\x1a" + v.attest[6:]
    with pytest.raises(AttestError) as info:
        parse_quote(creation)  # its body does not parse as TPMS_CREATION_INFO
    assert isinstance(info.value, QuoteMalformed)
    time = v.attest[:4] + b"\x80\x19" + v.attest[6:]
    with pytest.raises(NotAQuote, match=r"TPM_ST_ATTEST_TIME \(0x8019, made by TPM2_GetTime\)"):
        parse_quote(time)


@pytest.mark.parametrize(
    ("ak_scheme", "sig_scheme", "hash_name", "text"),
    [
        (ALG_RSASSA, ALG_RSAPSS, "sha256", "the AK signs with rsassa, not rsapss."),
        (ALG_RSAPSS, ALG_RSASSA, "sha256", "the AK signs with rsapss, not rsassa."),
    ],
)
def test_signature_scheme_must_be_the_aks(  # type: ignore[no-untyped-def]
    forge, rsa_key, ak_scheme: int, sig_scheme: int, hash_name: str, text: str
) -> None:
    v = forge.quote(rsa_key, scheme=sig_scheme, ak_scheme=ak_scheme).vector
    with pytest.raises(QuoteSignatureInvalid) as info:
        _verify(v)
    assert info.value.message.endswith(text)


def test_signature_hash_must_be_the_aks(forge, rsa_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(rsa_key, hash_name="sha384").vector
    v = v.with_(ak=forge.tpmt_public(rsa_key, scheme=ALG_RSASSA, hash_name="sha256"))
    with pytest.raises(QuoteSignatureInvalid) as info:
        _verify(v)
    assert info.value.message == (
        "The quote's signature (RSASSA-PKCS1-v1_5 with sha384) does not verify with the "
        "attestation key (AK): the AK signs with sha256, not sha384."
    )


def test_signature_by_another_key(forge, rsa_key, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key).vector
    other = forge.quote(ec.generate_private_key(ec.SECP256R1())).vector
    with pytest.raises(QuoteSignatureInvalid, match="the signature does not match the quote"):
        _verify(v.with_(signature=other.signature))
    rsa_sig = forge.sign(rsa_key, v.attest)
    ecc_ak = v.with_(ak=forge.tpmt_public(ecc_key, scheme=ALG_NULL), signature=rsa_sig)
    with pytest.raises(QuoteSignatureInvalid) as info:
        _verify(ecc_ak)
    assert info.value.message.endswith("an RSA signature (rsassa), but the AK is an ECC key.")
    rsa_ak = v.with_(ak=forge.tpmt_public(rsa_key, scheme=ALG_NULL))
    with pytest.raises(QuoteSignatureInvalid) as info:
        _verify(rsa_ak)
    assert info.value.message.endswith("an ECDSA signature, but the AK is an RSA key.")


def test_rsa_signature_of_the_wrong_size(forge, rsa_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(rsa_key).vector
    short = v.signature[:4] + b"\x00\x80" + v.signature[6:134]
    with pytest.raises(QuoteSignatureInvalid) as info:
        _verify(v.with_(signature=short))
    assert info.value.message.endswith("it is 128 bytes, an RSA-2048 signature is 256.")


def test_ecdsa_signature_out_of_range(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key).vector
    sig = parse_signature(v.signature)
    zero = type(sig)(ALG_ECDSA, sig.hash_alg, r=bytes(32), s=sig.s).to_bytes()
    with pytest.raises(QuoteSignatureInvalid):
        _verify(v.with_(signature=zero))


def test_quote_over_no_pcr(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key, selection=(PcrSelection(SHA256, ()),)).vector
    with pytest.raises(PcrSelectionMismatch) as info:
        _verify(v, pcrs={})
    assert info.value.message == (
        "The quote selects no PCR: it vouches for nothing about how the host booted."
    )


def test_selection_mismatch_lists_missing_and_extra(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    selection = (PcrSelection(SHA256, (0, 1, 2, 3, 7)),)
    v = forge.quote(ecc_key, selection=selection).vector
    pcrs = {"sha256": {n: v.pcrs["sha256"][n] for n in (0, 1, 7)}, "sha1": {4: bytes(20)}}
    with pytest.raises(PcrSelectionMismatch) as info:
        _verify(v, pcrs=pcrs)
    assert info.value.message == (
        "The PCR values presented are not the PCRs the quote covers (sha256 PCR 0-3, 7): "
        "missing quoted sha256 PCR 2, 3; presented but not quoted: sha1 PCR 4."
    )
    assert info.value.details["missing"] == [
        {"bank": "sha256", "pcr": 2},
        {"bank": "sha256", "pcr": 3},
    ]
    assert info.value.details["extra"] == [{"bank": "sha1", "pcr": 4}]


def test_pcr_value_of_the_wrong_size(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key).vector
    pcrs = {"sha256": {0: v.pcrs["sha256"][0], 7: bytes(20)}}
    with pytest.raises(QuoteMalformed) as info:
        _verify(v, pcrs=pcrs)
    assert info.value.message == "The value of sha256 PCR 7 is 20 bytes; a sha256 PCR is 32."


def test_nonce_given_but_quote_has_none(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    v = forge.quote(ecc_key, nonce=b"").vector
    assert _verify(v).quote.extra_data == b""
    with pytest.raises(NonceMismatch) as info:
        _verify(v, nonce=b"\x01" * 32)
    assert info.value.message == (
        "The quote was not made for this challenge: its nonce (extraData, 0 bytes) is not the "
        "nonce the verifier sent (32 bytes)."
    )


def test_ak_public_forms_agree(forge, rsa_key) -> None:  # type: ignore[no-untyped-def]
    tpmt = forge.tpmt_public(rsa_key)
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forms = [load_ak_public(x) for x in (tpmt, forge.tpm2b(tpmt), der)]
    assert forms[0].name == forms[1].name and forms[0].name is not None
    assert forms[2].name is None
    numbers = {f.key.public_numbers() for f in forms if isinstance(f.key, rsa.RSAPublicKey)}
    assert len(numbers) == 1
    assert isinstance(forms[0], AkPublic)
