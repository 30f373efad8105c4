"""Fuzzing: random and mutated TPM structures, tpm2-tools files (PCR values, plain signatures,
read by hostseal.attest.tpm2tools) and whole quotes raise only
AttestError (QuoteMalformed for the parsers), quickly."""

from __future__ import annotations

import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostseal.attest.errors import AttestError, QuoteMalformed
from hostseal.attest.quote import verify_quote
from hostseal.attest.tpm2tools import read_pcr_file, read_signature_file
from hostseal.attest.tpm_structures import PcrSelection, parse_attest, parse_signature, quote_fields
from hostseal.attest.tpmkey import load_ak_public, parse_public, parse_public_2b

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TIME_LIMIT = 1.0
HUGE = [0xFF, 0xFFFF, 0x8000, 0x0100, 0x0000]

_RSA = rsa.generate_private_key(65537, 2048)
_ECC = ec.generate_private_key(ec.SECP256R1())
SELECTION = (PcrSelection(0x000B, (0, 7)), PcrSelection(0x0004, (1,)))


def _seeds(forge):  # type: ignore[no-untyped-def]
    rsa_quote = forge.quote(_RSA, selection=SELECTION).vector
    ecc_quote = forge.quote(_ECC, selection=SELECTION).vector
    return rsa_quote, ecc_quote


def _serialized(pcrs: dict[int, bytes]) -> bytes:
    """A tpm2-tools 'serialized' PCR file of sha256 PCRs (one TPML_DIGEST)."""
    bitmap = bytearray(4)
    for n in pcrs:
        bitmap[n // 8] |= 1 << (n % 8)
    selection = struct.pack("<I", 1) + struct.pack("<HB4sx", 0x000B, 3, bytes(bitmap))
    selection += bytes(8 * 15)
    digests = b"".join(struct.pack("<H64s", 32, v) for v in pcrs.values())
    digests += bytes(66 * (8 - len(pcrs)))
    return selection + struct.pack("<I", 1) + struct.pack("<I", len(pcrs)) + digests


def _mutate(seed: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "huge", "insert"]))
    if not seed:
        return seed
    at = data.draw(st.integers(0, len(seed) - 1))
    if kind == "flip":
        return seed[:at] + bytes((seed[at] ^ data.draw(st.integers(1, 255)),)) + seed[at + 1 :]
    if kind == "truncate":
        return seed[:at]
    if kind == "huge":
        value = struct.pack(">H", data.draw(st.sampled_from(HUGE)))
        return seed[:at] + value + seed[at + 2 :]
    return seed[:at] + data.draw(st.binary(min_size=1, max_size=8)) + seed[at:]


def _only_quote_malformed(call, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    try:
        call(raw)
    except QuoteMalformed as err:
        assert err.message and err.remedy
    assert time.perf_counter() - started < TIME_LIMIT


PARSERS = [parse_attest, parse_signature, parse_public, parse_public_2b, load_ak_public]


@FUZZ
@given(raw=st.binary(max_size=600))
def test_random_bytes(raw: bytes) -> None:
    for parser in PARSERS:
        _only_quote_malformed(parser, raw)
    _only_quote_malformed(lambda b: read_pcr_file(b, SELECTION), raw)


@FUZZ
@given(data=st.data())
def test_mutated_structures(forge, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    rsa_quote, ecc_quote = _seeds(forge)
    seeds = {
        parse_attest: rsa_quote.attest,
        parse_signature: data.draw(st.sampled_from([rsa_quote.signature, ecc_quote.signature])),
        load_ak_public: data.draw(st.sampled_from([rsa_quote.ak, ecc_quote.ak])),
        parse_public_2b: forge.tpm2b(ecc_quote.ak),
    }
    for parser, seed in seeds.items():
        _only_quote_malformed(parser, _mutate(seed, data))
    pcr_file = _serialized(ecc_quote.pcrs["sha256"])
    _only_quote_malformed(lambda b: read_pcr_file(b, SELECTION), _mutate(pcr_file, data))


@FUZZ
@given(data=st.data())
def test_mutated_quotes_fail_with_attest_errors(forge, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    v = data.draw(st.sampled_from(_seeds(forge)))
    ak = load_ak_public(v.ak)
    which = data.draw(st.sampled_from(["attest", "signature", "plain"]))
    attest, signature = v.attest, v.signature
    if which == "attest":
        attest = _mutate(attest, data)
    elif which == "signature":
        signature = _mutate(signature, data)
    started = time.perf_counter()
    try:
        if which == "plain":
            sig = read_signature_file(_mutate(signature, data), ak, b"\0" * 32)
            verify_quote(ak, attest, sig, nonce=v.nonce, pcrs=v.pcrs)
        else:
            verify_quote(ak, attest, signature, nonce=v.nonce, pcrs=v.pcrs)
    except AttestError as err:
        assert err.message and err.remedy
        assert "checks" in err.details or which == "plain"
    assert time.perf_counter() - started < TIME_LIMIT


def _full(raw: bytes) -> tuple[object, ...] | None:
    """What the full parser makes of a quote, as quote_fields returns it (None: not a quote)."""
    try:
        parsed = parse_attest(raw)
    except QuoteMalformed:
        return None
    if parsed.magic != 0xFF544347 or parsed.quote is None:
        return None
    q = parsed.quote
    clock = parsed.clock_info
    return (q.selection, q.pcr_digest, parsed.extra_data, clock, parsed.firmware_version,
            parsed.qualified_signer)  # fmt: skip


@FUZZ
@given(data=st.data())
def test_the_one_pass_quote_reader_agrees_with_the_full_parser(forge, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    """quote_fields (the service's fast path) reads exactly what parse_attest reads, or declines
    (None) and leaves the full parser to refuse; it never accepts what the parser refuses."""
    seed = data.draw(st.sampled_from(_seeds(forge))).attest
    raw = data.draw(st.one_of(st.just(seed), st.builds(lambda: _mutate(seed, data))))
    fast = quote_fields(raw)
    full = _full(raw)
    if fast is not None:
        assert fast == full
    assert quote_fields(seed) == _full(seed) is not None


@FUZZ
@given(data=st.data())
def test_the_one_read_signature_parser_agrees_with_the_field_by_field_one(
    forge, data: st.DataObject
) -> None:  # type: ignore[no-untyped-def]
    from hostseal.attest.tpm_structures import read_signature

    rsa_quote, ecc_quote = _seeds(forge)
    seed = data.draw(st.sampled_from([rsa_quote.signature, ecc_quote.signature]))
    raw = data.draw(st.one_of(st.just(seed), st.builds(lambda: _mutate(seed, data))))
    try:
        expected = read_signature(raw)
    except QuoteMalformed:
        with pytest.raises(QuoteMalformed):
            parse_signature(raw)
        return
    assert parse_signature(raw) == expected
