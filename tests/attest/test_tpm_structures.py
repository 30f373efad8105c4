"""The TPM structure parsers: what they read, and what they say about malformed bytes."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hostseal.attest.errors import QuoteMalformed
from hostseal.attest.tpm_structures import (
    ALG_ECDSA,
    ALG_RSASSA,
    ST_ATTEST_QUOTE,
    TPM_GENERATED_VALUE,
    ClockInfo,
    PcrSelection,
    Reader,
    Signature,
    encode_pcr_selection,
    encode_quote_attest,
    parse_attest,
    parse_signature,
    read_pcr_selection,
)
from hostseal.attest.tpmkey import load_ak_public, parse_public, parse_public_2b

SHA1, SHA256 = 0x0004, 0x000B
QUOTE = encode_quote_attest(
    extra_data=b"\x0b\xad\xc0\xde",
    selection=(PcrSelection(SHA256, (0, 7)), PcrSelection(SHA1, (23,))),
    pcr_digest=bytes(range(32)),
    qualified_signer=b"\x00\x0b" + bytes(32),
    clock_info=ClockInfo(6587, 2, 1, True),
    firmware_version=0x2019102300163636,
)


def _malformed(call, data: bytes) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(QuoteMalformed) as info:
        call(data)
    assert info.value.remedy
    return info.value.message


def test_quote_attest_round_trip() -> None:
    attest = parse_attest(QUOTE)
    assert attest.magic == TPM_GENERATED_VALUE
    assert attest.type == ST_ATTEST_QUOTE and attest.type_name == "TPM_ST_ATTEST_QUOTE"
    assert attest.extra_data == b"\x0b\xad\xc0\xde"
    assert attest.clock_info == ClockInfo(6587, 2, 1, True)
    assert attest.firmware_version == 0x2019102300163636
    assert attest.quote is not None
    assert attest.quote.selection == (PcrSelection(SHA256, (0, 7)), PcrSelection(SHA1, (23,)))
    assert [s.bank for s in attest.quote.selection] == ["sha256", "sha1"]
    assert attest.quote.pcr_digest == bytes(range(32))
    assert attest.raw == QUOTE


def test_pcr_selection_wider_than_three_bytes() -> None:
    selection = (PcrSelection(SHA256, (0, 31)),)
    encoded = encode_pcr_selection(selection)
    assert encoded == bytes.fromhex("00000001000b0401000080")
    assert read_pcr_selection(Reader(encoded, "test")) == selection


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "TPMS_ATTEST at offset 0 (0x0): magic needs 4 bytes, the data has 0 left."),
        (
            bytes.fromhex("ff5443478018"),
            "TPMS_ATTEST at offset 6 (0x6): the size of qualifiedSigner needs 2 bytes, the data "
            "has 0 left.",
        ),
        (
            bytes.fromhex("ff54434780180100"),
            "TPMS_ATTEST at offset 6 (0x6): qualifiedSigner is 256 bytes, more than the 66 "
            "allowed.",
        ),
        (
            bytes.fromhex("ff5443478018000400"),
            "TPMS_ATTEST at offset 6 (0x6): qualifiedSigner claims 4 bytes, the data has 1 left.",
        ),
        (
            QUOTE + b"\0",
            f"TPMS_ATTEST at offset {len(QUOTE)} (0x{len(QUOTE):x}): the structure ends here, "
            "yet 1 more byte(s) follow.",
        ),
    ],
)
def test_attest_errors_say_where(data: bytes, message: str) -> None:
    assert _malformed(parse_attest, data) == message


def test_attest_selection_and_digest_limits() -> None:
    head = QUOTE[: QUOTE.index(encode_pcr_selection((PcrSelection(SHA256, (0, 7)),))[4:]) - 4]
    many = head + struct.pack(">I", 17)
    assert _malformed(parse_attest, many).endswith("quote.pcrSelect lists 17 banks, more than 16.")
    big_digest = head + struct.pack(">I", 0) + struct.pack(">H", 65) + bytes(65)
    assert _malformed(parse_attest, big_digest).endswith(
        "quote.pcrDigest is 65 bytes, more than the 64 allowed."
    )


def test_every_truncation_is_malformed() -> None:
    for end in range(len(QUOTE)):
        with pytest.raises(QuoteMalformed, match=r"^TPMS_ATTEST at offset \d+"):
            parse_attest(QUOTE[:end])


def test_other_attestation_types_keep_their_body() -> None:
    nv = QUOTE[:4] + b"\x80\x14" + QUOTE[6:]
    attest = parse_attest(nv)
    assert attest.quote is None and attest.type_name == "TPM_ST_ATTEST_NV"
    assert attest.body and attest.raw == nv
    unknown = QUOTE[:4] + b"\x80\x99" + QUOTE[6:]
    assert parse_attest(unknown).type_name == "TPM_ST 0x8099"


# --- TPMT_SIGNATURE --------------------------------------------------------------------------


def test_signature_round_trips() -> None:
    ecdsa = Signature(ALG_ECDSA, SHA256, r=b"\x01" * 32, s=b"\x02" * 32)
    assert parse_signature(ecdsa.to_bytes()) == ecdsa
    rsassa = Signature(ALG_RSASSA, SHA1, rsa_sig=bytes(256))
    assert parse_signature(rsassa.to_bytes()) == rsassa
    assert rsassa.to_dict() == {"scheme": "rsassa", "hash": "sha1"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            bytes.fromhex("0005000b0000"),
            "TPMT_SIGNATURE at offset 0 (0x0): the signature algorithm is alg_0x0005 (0x0005); "
            "hostseal verifies RSASSA (0x0014), RSAPSS (0x0016) and ECDSA (0x0018) signatures.",
        ),
        (
            bytes.fromhex("001400120000"),
            "TPMT_SIGNATURE at offset 2 (0x2): the signature's hash is sm3_256 (0x0012); "
            "hostseal verifies sha1, sha256, sha384 and sha512.",
        ),
        (
            bytes.fromhex("0018000b0001aa"),
            "TPMT_SIGNATURE at offset 7 (0x7): the size of signatureS needs 2 bytes, the data "
            "has 0 left.",
        ),
        (
            bytes.fromhex("0014000b0100") + bytes(255),
            "TPMT_SIGNATURE at offset 4 (0x4): sig claims 256 bytes, the data has 255 left.",
        ),
    ],
)
def test_signature_errors(data: bytes, message: str) -> None:
    assert _malformed(parse_signature, data) == message


# --- TPMT_PUBLIC / the AK --------------------------------------------------------------------


def test_public_area_of_an_ecc_ak(forge, ecc_key) -> None:  # type: ignore[no-untyped-def]
    raw = forge.tpmt_public(ecc_key)
    public = parse_public(raw)
    assert public.ecc_params is not None and public.rsa_params is None
    assert public.ecc_params.curve == 0x0003
    assert public.scheme == ALG_ECDSA and public.scheme_hash == SHA256
    assert public.restricted_signing
    assert public.name[:2] == b"\x00\x0b" and len(public.name) == 34
    assert parse_public_2b(forge.tpm2b(raw)) == public
    numbers = public.public_key().public_numbers()  # type: ignore[union-attr]
    assert numbers == ecc_key.public_key().public_numbers()


def test_public_area_errors(forge, rsa_key, ecc_key) -> None:  # type: ignore[no-untyped-def]
    rsa_raw = forge.tpmt_public(rsa_key)
    assert _malformed(parse_public, b"\x00\x08" + rsa_raw[2:]) == (
        "TPMT_PUBLIC at offset 0 (0x0): the key type is alg_0x0008 (0x0008), not RSA or ECC."
    )
    bits = rsa_raw.index(struct.pack(">H", 2048))
    wrong_bits = rsa_raw[:bits] + struct.pack(">H", 1024) + rsa_raw[bits + 2 :]
    assert _malformed(parse_public, wrong_bits).endswith(
        "keyBits says 1024 but the modulus is 2048 bits."
    )
    ecc_raw = forge.tpmt_public(ecc_key)
    curve = ecc_raw.index(struct.pack(">HH", 0x0003, 0x0010))
    bn = ecc_raw[:curve] + b"\x00\x10" + ecc_raw[curve + 2 :]
    assert _malformed(parse_public, bn) == (
        f"TPMT_PUBLIC at offset {curve} (0x{curve:x}): curve 0x0010 is not supported "
        "(hostseal knows NIST P-192 to P-521)."
    )
    off_curve = ecc_raw[:-1] + bytes((ecc_raw[-1] ^ 1,))
    assert _malformed(load_ak_public, off_curve).startswith(
        "TPMT_PUBLIC: the ECC public key is not valid"
    )
    assert _malformed(parse_public_2b, forge.tpm2b(ecc_raw) + b"\0") == (
        f"TPM2B_PUBLIC at offset {len(ecc_raw) + 2} (0x{len(ecc_raw) + 2:x}): the structure "
        "ends here, yet 1 more byte(s) follow."
    )


def test_ak_loader_errors(ecc_key) -> None:  # type: ignore[no-untyped-def]
    assert _malformed(load_ak_public, b"-----BEGIN PUBLIC KEY-----\nAAAA\n").startswith(
        "The AK public key is not a valid PEM SubjectPublicKeyInfo"
    )
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = ed.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert _malformed(load_ak_public, pem) == (
        "The AK public key is a Ed25519PublicKey, not an RSA or EC key."
    )
    assert _malformed(load_ak_public, b"\x01\x18abc").startswith(
        "TPM2B_PUBLIC at offset 0 (0x0): publicArea claims 280 bytes, the data has 3 left."
    )
    assert isinstance(ecc_key, ec.EllipticCurvePrivateKey)
