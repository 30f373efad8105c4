"""Readers of tpm2-tools' file formats, pure: the bytes of a file in, typed values out.

``hostseal quote verify`` reads the files ``tpm2_quote``, ``tpm2_pcrread`` and ``tpm2_createak``
write and hands the values to :func:`hostseal.attest.quote.verify_quote`:

* PCR values (:func:`read_pcr_file`): ``tpm2_quote -o`` in any ``--pcrs_format``
  (``serialized``, the default: the in-memory TPML_PCR_SELECTION and TPML_DIGESTs,
  little-endian; ``marshaled``; ``values``: the bare digests, in the quote's selection order),
  or ``tpm2_pcrread`` YAML;
* signatures (:func:`read_signature_file`): TPMT_SIGNATURE (``tpm2_quote -s``, the default
  ``--format tss``) or ``--format plain`` (a raw RSA signature, or a DER ECDSA signature).

The files come from outside, so every reader is bounds-checked and raises only
:class:`~hostseal.attest.errors.QuoteMalformed` for bytes it cannot read.
"""

from __future__ import annotations

import re
import struct

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hostseal.attest.errors import QuoteMalformed
from hostseal.attest.tpm_structures import (
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSAPSS,
    ALG_RSASSA,
    HASHES,
    HASHES_BY_SIZE,
    PcrSelection,
    Reader,
    Signature,
    parse_signature,
    read_pcr_selection,
)
from hostseal.attest.tpmkey import AkPublic
from hostseal.measure.events import ALGORITHMS_BY_NAME

__all__ = [
    "Pcrs",
    "bank_size",
    "parse_pcr_values",
    "parse_pcr_yaml",
    "parse_pcrs_marshaled",
    "parse_pcrs_serialized",
    "read_pcr_file",
    "read_signature_file",
]

Pcrs = dict[str, dict[int, bytes]]
"""PCR values by bank name and PCR number: ``{"sha256": {0: digest, 7: digest}}``."""

_PCR_FORMATS = (
    "tpm2_quote -o (serialized, marshaled or values) or tpm2_pcrread YAML "
    "('sha256:' then lines like '  0 : 0x3D45...')"
)

# tpm2-tools "serialized": the C structs written as they are in memory (little-endian, padded)
_SER_SELECTION = struct.Struct("<HB4sx")  # TPMS_PCR_SELECTION: hash, sizeofSelect, pcrSelect[4]
_SER_BANKS = 16  # TPM2_NUM_PCR_BANKS
_SER_SELECTION_LIST = 4 + _SER_BANKS * _SER_SELECTION.size  # TPML_PCR_SELECTION: 132 bytes
_SER_DIGEST = struct.Struct("<H64s")  # TPM2B_DIGEST: size, buffer[sizeof(TPMU_HA)]
_SER_DIGESTS = 8  # TPML_DIGEST holds up to 8
_SER_DIGEST_LIST = 4 + _SER_DIGESTS * _SER_DIGEST.size  # TPML_DIGEST: 532 bytes
_U32_LE = struct.Struct("<I")

_BANK_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*$")
_VALUE_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S*)\s*$")


def _malformed(what: str) -> QuoteMalformed:
    return QuoteMalformed(
        f"PCR file: {what}.",
        f"Give the PCR values as {_PCR_FORMATS}.",
        structure="PCR file",
    )


# --- PCR files -------------------------------------------------------------------------------


def read_pcr_file(data: bytes, selection: tuple[PcrSelection, ...]) -> Pcrs:
    """PCR values from a tpm2-tools file; ``selection`` (the quote's) orders a ``values`` file.

    Raises :class:`QuoteMalformed` when the file is none of the formats.
    """
    text = _as_text(data)
    if text is not None and any(_BANK_LINE.match(line) for line in text.splitlines()):
        return parse_pcr_yaml(text)
    if _serialized_size(data):
        return parse_pcrs_serialized(data)
    try:
        return parse_pcrs_marshaled(data)
    except QuoteMalformed:
        pass
    expected = sum(len(s.pcrs) * bank_size(s.bank) for s in selection)
    if expected and len(data) == expected:
        return parse_pcr_values(data, selection)
    raise _malformed(
        f"{len(data)} bytes that are not PCR values in a format hostseal reads "
        f"(a 'values' file for this quote would be {expected} bytes)"
    )


def _as_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c.isspace() for c in text) else None


def bank_size(bank: str) -> int:
    """The digest size of the PCR bank ``bank`` (``sha256``: 32); :class:`QuoteMalformed` for a
    bank hostseal does not know."""
    known = ALGORITHMS_BY_NAME.get(bank)
    if known is None:
        raise _malformed(f"the PCR bank {bank!r} is not one hostseal knows")
    return known.size


def parse_pcr_yaml(text: str) -> Pcrs:
    """``tpm2_pcrread`` output (also the ``pcrs:`` part of ``tpm2_quote``'s output)."""
    pcrs: Pcrs = {}
    bank: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _BANK_LINE.match(line)
        if header:
            name = header.group(1).lower()
            bank = name if name in ALGORITHMS_BY_NAME else None
            if bank is not None:
                pcrs.setdefault(bank, {})
            continue
        value = _VALUE_LINE.match(line)
        if value is None:
            continue  # other keys of tpm2_quote's output ("quoted:", "signature:" ...)
        if bank is None:
            raise _malformed(f"line {number}: a PCR value outside a bank ('sha256:')")
        pcr, hex_value = int(value.group(1)), value.group(2).lower().removeprefix("0x")
        try:
            digest = bytes.fromhex(hex_value)
        except ValueError:
            raise _malformed(f"line {number}: {value.group(2)!r} is not a hex value") from None
        if pcr in pcrs[bank]:
            raise _malformed(f"line {number}: {bank} PCR {pcr} is listed twice")
        pcrs[bank][pcr] = digest
    return {bank: values for bank, values in pcrs.items() if values}


def _serialized_size(data: bytes) -> bool:
    rest = len(data) - _SER_SELECTION_LIST - 4
    if rest < 0 or rest % _SER_DIGEST_LIST:
        return False
    count = _U32_LE.unpack_from(data, _SER_SELECTION_LIST)[0]
    return bool(count == rest // _SER_DIGEST_LIST and _U32_LE.unpack_from(data)[0] <= _SER_BANKS)


def parse_pcrs_serialized(data: bytes) -> Pcrs:
    """tpm2-tools' default ``--pcrs_format serialized``: the C structures as in memory."""
    if not _serialized_size(data):
        raise _malformed(f"{len(data)} bytes is not the size of a tpm2-tools 'serialized' file")
    selection = []
    for i in range(_U32_LE.unpack_from(data)[0]):
        alg_id, size, bitmap = _SER_SELECTION.unpack_from(data, 4 + i * _SER_SELECTION.size)
        if size > len(bitmap):
            raise _malformed(f"selection {i} has sizeofSelect {size}, more than 4")
        pcrs = tuple(n for n in range(size * 8) if bitmap[n // 8] >> (n % 8) & 1)
        selection.append(PcrSelection(alg_id, pcrs))
    digests = []
    offset = _SER_SELECTION_LIST + 4
    while offset < len(data):
        count = _U32_LE.unpack_from(data, offset)[0]
        if count > _SER_DIGESTS:
            raise _malformed(f"a TPML_DIGEST at offset {offset} holds {count} digests, over 8")
        for k in range(count):
            size, buffer = _SER_DIGEST.unpack_from(data, offset + 4 + k * _SER_DIGEST.size)
            if size > len(buffer):
                raise _malformed(f"a digest at offset {offset} is {size} bytes, over 64")
            digests.append(buffer[:size])
        offset += _SER_DIGEST_LIST
    return _assign(tuple(selection), digests)


def parse_pcrs_marshaled(data: bytes) -> Pcrs:
    """``--pcrs_format marshaled``: TPML_PCR_SELECTION, UINT32 count, TPML_DIGESTs (TSS
    marshalling, big-endian)."""
    r = Reader(data, "PCR file (marshaled)")
    selection = read_pcr_selection(r, "pcrSelections")
    digests: list[bytes] = []
    for i in range(r.u32("the count of TPML_DIGESTs")):
        count = r.u32(f"TPML_DIGEST {i}.count")
        if count > _SER_DIGESTS:
            raise r.fail(f"TPML_DIGEST {i} holds {count} digests, more than 8")
        digests.extend(r.tpm2b(f"TPML_DIGEST {i} digest {k}", 64) for k in range(count))
    r.end()
    return _assign(selection, digests)


def parse_pcr_values(data: bytes, selection: tuple[PcrSelection, ...]) -> Pcrs:
    """``--pcrs_format values``: the digests back to back, in the quote's selection order."""
    digests: list[bytes] = []
    offset = 0
    for sel in selection:
        size = bank_size(sel.bank)
        for _ in sel.pcrs:
            digests.append(data[offset : offset + size])
            offset += size
    if offset != len(data):
        raise _malformed(f"{len(data)} bytes of values, the quote's selection needs {offset}")
    return _assign(selection, digests)


def _assign(selection: tuple[PcrSelection, ...], digests: list[bytes]) -> Pcrs:
    wanted = sum(len(s.pcrs) for s in selection)
    if wanted != len(digests):
        raise _malformed(f"it selects {wanted} PCRs but holds {len(digests)} values")
    pcrs: Pcrs = {}
    values = iter(digests)
    for sel in selection:
        bank = pcrs.setdefault(sel.bank, {})
        for pcr in sel.pcrs:
            bank[pcr] = next(values)
    return pcrs


# --- signatures ------------------------------------------------------------------------------


def read_signature_file(data: bytes, ak: AkPublic, pcr_digest: bytes) -> Signature:
    """A TPMT_SIGNATURE, or tpm2-tools' ``--format plain``: for an RSA AK the bare signature
    (exactly the modulus size; a TPMT_SIGNATURE is 6 bytes longer), for an ECC AK a DER
    ECDSA-Sig-Value (starts with 0x30; a TPMT_SIGNATURE starts with 0x0018).

    A plain signature does not say its scheme or hash: the scheme is the AK's (RSASSA when the
    AK has none, as tpm2_quote chooses), the hash the AK's, else the one of the quote's
    pcrDigest size (TPM2_Quote hashes the PCRs with the signing hash).
    """
    key = ak.key
    plain_rsa = isinstance(key, rsa.RSAPublicKey) and len(data) == (key.key_size + 7) // 8
    plain_ecdsa = isinstance(key, ec.EllipticCurvePublicKey) and data[:1] == b"\x30"
    if not (plain_rsa or plain_ecdsa):
        return parse_signature(data)
    public = ak.public
    hash_alg = public.scheme_hash if public is not None else ALG_NULL
    if hash_alg not in HASHES:
        known = HASHES_BY_SIZE.get(len(pcr_digest))
        if known is None:
            raise QuoteMalformed(
                "The signature is in tpm2-tools' plain format, which does not say its hash, "
                f"and the quote's pcrDigest ({len(pcr_digest)} bytes) does not tell it either.",
                "Save the signature as a TPMT_SIGNATURE (tpm2_quote -s FILE, without -f plain).",
                structure="plain signature",
            )
        hash_alg = known.alg_id
    if plain_rsa:
        scheme = ALG_RSAPSS if public is not None and public.scheme == ALG_RSAPSS else ALG_RSASSA
        return Signature(scheme, hash_alg, rsa_sig=data)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        r, s = decode_dss_signature(data)
    except ValueError:
        raise QuoteMalformed(
            "The signature starts like a DER ECDSA signature (tpm2-tools' plain format) but "
            "is not one.",
            "Save the signature as a TPMT_SIGNATURE (tpm2_quote -s FILE).",
            structure="plain signature",
            offset=0,
        ) from None
    size = (key.curve.key_size + 7) // 8
    if r.bit_length() > size * 8 or s.bit_length() > size * 8:
        raise QuoteMalformed(
            f"The DER ECDSA signature's values are larger than the AK's {key.curve.name} curve.",
            "Check that the AK given is the key that signed the quote.",
            structure="plain signature",
            offset=0,
        )
    return Signature(ALG_ECDSA, hash_alg, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big"))
