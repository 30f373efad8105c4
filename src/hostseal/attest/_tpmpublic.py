"""The EK's public area, read with :mod:`hostseal.attest.tpmkey` for the enrolment side.

Enrolment takes the EK as the host sends it (a TPM2B_PUBLIC as ``tpm2_createek -u`` writes it,
or a bare TPMT_PUBLIC) and reports problems as :class:`EkPublicInvalid`, with a remedy about the
EK rather than about quotes.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hostseal.attest.errors import EkPublicInvalid, QuoteMalformed
from hostseal.attest.tpmkey import TpmPublic, parse_public, parse_public_2b

__all__ = ["TpmPublic", "ek_public_key", "parse_ek_public"]


def parse_ek_public(data: bytes) -> TpmPublic:
    """A TPM2B_PUBLIC or a bare TPMT_PUBLIC (RSA or ECC). A TPM2B_PUBLIC is recognised by its
    size field, which equals the length of what follows (a TPMT_PUBLIC starts with its type,
    0x0001 or 0x0023, never its own length less two)."""
    raw = bytes(data)
    try:
        if len(raw) >= 2 and struct.unpack(">H", raw[:2])[0] == len(raw) - 2:
            return parse_public_2b(raw)
        return parse_public(raw)
    except QuoteMalformed as err:
        raise EkPublicInvalid(f"The EK public area is malformed: {err.message}") from None


def ek_public_key(ek: TpmPublic) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        return ek.public_key()
    except QuoteMalformed as err:
        raise EkPublicInvalid(f"The EK public area is malformed: {err.message}") from None
