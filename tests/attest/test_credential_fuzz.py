"""Fuzzing MakeCredential's inputs from the host: any EK public area or AK name gives a
credential or EkPublicInvalid / AkNameInvalid, never another exception."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostseal.attest.credential import make_credential
from hostseal.attest.errors import AkNameInvalid, EkPublicInvalid

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AK_NAME = b"\x00\x0b" + bytes(32)


def _ecc_ek() -> bytes:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    body = struct.pack(">HHI", 0x0023, 0x000B, 0x000300B2) + struct.pack(">H", 0)
    body += struct.pack(">HHH", 0x0006, 128, 0x0043) + struct.pack(">HHH", 0x0010, 0x0003, 0x0010)
    for coordinate in (point.x, point.y):
        body += struct.pack(">H", 32) + coordinate.to_bytes(32, "big")
    return struct.pack(">H", len(body)) + body


ECC_EK = _ecc_ek()


def attempt(ek: bytes, name: bytes) -> None:
    try:
        make_credential(ek, name, b"secret")
    except (EkPublicInvalid, AkNameInvalid) as err:
        assert err.message and err.remedy


@FUZZ
@given(st.binary(max_size=600), st.binary(max_size=70))
def test_random_inputs(ek: bytes, name: bytes) -> None:
    attempt(ek, name)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_ecc_ek(edits: list[tuple[int, int]]) -> None:
    raw = bytearray(ECC_EK)
    for position, value in edits:
        raw[position % len(raw)] = value
    attempt(bytes(raw), AK_NAME)
