"""Parsers for the TPM 2.0 structures of a quote: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC.

The bytes come from the network, so every read is bounds-checked: a malformed structure raises
:class:`~hostseal.attest.errors.QuoteMalformed` naming the structure, the byte offset and what is
wrong, never ``IndexError`` or ``struct.error``. TPM structures are big-endian (TPM 2.0 Library
Part 2); nothing here imports tpm2-pytss.

Keys (TPMT_PUBLIC, the AK) are in :mod:`hostseal.attest.tpmkey`.

>>> parse_attest(quote_bytes).quote.pcr_digest.hex()          # doctest: +SKIP
>>> parse_signature(signature_bytes).scheme                   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from hostseal.attest.errors import QuoteMalformed
from hostseal.measure.events import algorithm_name

TPM_GENERATED_VALUE = 0xFF544347

ST_ATTEST_NV = 0x8014
ST_ATTEST_COMMAND_AUDIT = 0x8015
ST_ATTEST_SESSION_AUDIT = 0x8016
ST_ATTEST_CERTIFY = 0x8017
ST_ATTEST_QUOTE = 0x8018
ST_ATTEST_TIME = 0x8019
ST_ATTEST_CREATION = 0x801A
ST_ATTEST_NV_DIGEST = 0x801C

ATTEST_TYPES: dict[int, tuple[str, str]] = {  # type -> (TPM_ST name, the command that makes it)
    ST_ATTEST_NV: ("TPM_ST_ATTEST_NV", "TPM2_NV_Certify"),
    ST_ATTEST_COMMAND_AUDIT: ("TPM_ST_ATTEST_COMMAND_AUDIT", "TPM2_GetCommandAuditDigest"),
    ST_ATTEST_SESSION_AUDIT: ("TPM_ST_ATTEST_SESSION_AUDIT", "TPM2_GetSessionAuditDigest"),
    ST_ATTEST_CERTIFY: ("TPM_ST_ATTEST_CERTIFY", "TPM2_Certify"),
    ST_ATTEST_QUOTE: ("TPM_ST_ATTEST_QUOTE", "TPM2_Quote"),
    ST_ATTEST_TIME: ("TPM_ST_ATTEST_TIME", "TPM2_GetTime"),
    ST_ATTEST_CREATION: ("TPM_ST_ATTEST_CREATION", "TPM2_CertifyCreation"),
    ST_ATTEST_NV_DIGEST: ("TPM_ST_ATTEST_NV_DIGEST", "TPM2_NV_Certify"),
}

# TPM_ALG_ID values (TPM 2.0 Library Part 2, table 9)
ALG_RSA = 0x0001
ALG_SHA1 = 0x0004
ALG_AES = 0x0006
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_NULL = 0x0010
ALG_SM4 = 0x0013
ALG_RSASSA = 0x0014
ALG_RSAES = 0x0015
ALG_RSAPSS = 0x0016
ALG_OAEP = 0x0017
ALG_ECDSA = 0x0018
ALG_ECDH = 0x0019
ALG_ECDAA = 0x001A
ALG_SM2 = 0x001B
ALG_ECSCHNORR = 0x001C
ALG_ECMQV = 0x001D
ALG_ECC = 0x0023
ALG_CAMELLIA = 0x0026

SIGNATURE_SCHEMES = {ALG_RSASSA: "rsassa", ALG_RSAPSS: "rsapss", ALG_ECDSA: "ecdsa"}

# TPMA_OBJECT bits
ATTR_FIXED_TPM = 0x00000002
ATTR_FIXED_PARENT = 0x00000010
ATTR_SENSITIVE_DATA_ORIGIN = 0x00000020
ATTR_RESTRICTED = 0x00010000
ATTR_DECRYPT = 0x00020000
ATTR_SIGN = 0x00040000


@dataclass(frozen=True, slots=True)
class HashAlg:
    """A hash algorithm a quote may use: TPM_ALG_ID, name (as PCR banks are named), size."""

    alg_id: int
    name: str
    size: int

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.name, data).digest()

    def crypto(self) -> hashes.HashAlgorithm:
        """The ``cryptography`` hash object, for signature verification."""
        return _CRYPTO_HASH_OBJECTS[self.alg_id]


HASHES: dict[int, HashAlg] = {
    h.alg_id: h
    for h in (
        HashAlg(ALG_SHA1, "sha1", 20),
        HashAlg(ALG_SHA256, "sha256", 32),
        HashAlg(ALG_SHA384, "sha384", 48),
        HashAlg(ALG_SHA512, "sha512", 64),
    )
}
_CRYPTO_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    ALG_SHA1: hashes.SHA1,
    ALG_SHA256: hashes.SHA256,
    ALG_SHA384: hashes.SHA384,
    ALG_SHA512: hashes.SHA512,
}
# stateless: one instance each, shared by every verification
_CRYPTO_HASH_OBJECTS = {alg_id: cls() for alg_id, cls in _CRYPTO_HASHES.items()}
HASHES_BY_NAME = {h.name: h for h in HASHES.values()}
HASHES_BY_SIZE = {h.size: h for h in HASHES.values()}  # sizes are distinct among these four

CURVES: dict[int, tuple[str, type[ec.EllipticCurve], int]] = {  # TPM_ECC_CURVE -> name, size
    0x0001: ("NIST P-192", ec.SECP192R1, 24),
    0x0002: ("NIST P-224", ec.SECP224R1, 28),
    0x0003: ("NIST P-256", ec.SECP256R1, 32),
    0x0004: ("NIST P-384", ec.SECP384R1, 48),
    0x0005: ("NIST P-521", ec.SECP521R1, 66),
}


def alg_name(alg_id: int) -> str:
    """``sha256`` for 0x000B, ``ecdsa`` for 0x0018, ``alg_0x1234`` for an unknown ID."""
    if alg_id in SIGNATURE_SCHEMES:
        return SIGNATURE_SCHEMES[alg_id]
    names = {ALG_RSA: "rsa", ALG_ECC: "ecc", ALG_NULL: "null", ALG_RSAES: "rsaes"}
    return names.get(alg_id) or algorithm_name(alg_id)


def attest_type_name(value: int) -> str:
    known = ATTEST_TYPES.get(value)
    return known[0] if known else f"TPM_ST 0x{value:04x}"


# --- bounds-checked reading ------------------------------------------------------------------


class Reader:
    """Big-endian reads over bytes from outside; every failure is a :class:`QuoteMalformed`."""

    __slots__ = ("data", "pos", "structure")

    def __init__(self, data: bytes, structure: str, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.structure = structure

    def fail(self, what: str, offset: int | None = None) -> QuoteMalformed:
        return QuoteMalformed.at(self.structure, self.pos if offset is None else offset, what)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, field: str) -> bytes:
        start = self.pos
        end = start + size
        if end > len(self.data):
            raise self.fail(f"{field} needs {size} bytes, the data has {self.left} left")
        self.pos = end
        return self.data[start:end]

    def _unpack(self, fmt: struct.Struct, field: str) -> int:
        start = self.pos
        if start + fmt.size > len(self.data):
            raise self.fail(f"{field} needs {fmt.size} bytes, the data has {self.left} left")
        self.pos = start + fmt.size
        value: int = fmt.unpack_from(self.data, start)[0]
        return value

    def u8(self, field: str) -> int:
        return self._unpack(_U8, field)

    def u16(self, field: str) -> int:
        return self._unpack(_U16, field)

    def u32(self, field: str) -> int:
        return self._unpack(_U32, field)

    def u64(self, field: str) -> int:
        return self._unpack(_U64, field)

    def tpm2b(self, field: str, max_size: int | None = None) -> bytes:
        """A TPM2B: a 16-bit size, then that many bytes. (Field names are formatted only for an
        error: this runs for every quote the service checks.)"""
        start = self.pos
        data = self.data
        if start + 2 > len(data):
            raise self.fail(f"the size of {field} needs 2 bytes, the data has {self.left} left")
        size = data[start] << 8 | data[start + 1]
        if max_size is not None and size > max_size:
            raise self.fail(f"{field} is {size} bytes, more than the {max_size} allowed", start)
        end = start + 2 + size
        if end > len(data):
            self.pos = start + 2
            raise self.fail(f"{field} claims {size} bytes, the data has {self.left} left", start)
        self.pos = end
        return data[start + 2 : end]

    def end(self) -> None:
        if self.left:
            raise self.fail(f"the structure ends here, yet {self.left} more byte(s) follow")


_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MAGIC_TYPE = struct.Struct(">IH")
_CLOCK_FIRMWARE = struct.Struct(">QIIBQ")  # TPMS_CLOCK_INFO, firmwareVersion
MAX_DIGEST = 64  # sizeof(TPMU_HA) with SHA-512
MAX_NAME = 2 + MAX_DIGEST  # TPM2B_NAME: a TPMT_HA (or a 4-byte handle)
MAX_PCR_BANKS = 16  # TPM2_NUM_PCR_BANKS


def hash_of(reader: Reader, alg_id: int, field: str, offset: int) -> HashAlg:
    known = HASHES.get(alg_id)
    if known is None:
        raise reader.fail(
            f"{field} is {alg_name(alg_id)} (0x{alg_id:04x}); hostseal verifies sha1, sha256, "
            "sha384 and sha512",
            offset,
        )
    return known


# --- TPML_PCR_SELECTION ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank and the PCRs selected in it (ascending)."""

    alg_id: int
    pcrs: tuple[int, ...]
    bank: str = field(init=False, repr=False, compare=False)
    """The bank's name as :mod:`hostseal.measure` names it: ``sha256``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bank", algorithm_name(self.alg_id))

    def to_dict(self) -> dict[str, object]:
        return {"bank": self.bank, "pcrs": list(self.pcrs)}


def read_pcr_selection(reader: Reader, field: str = "pcrSelect") -> tuple[PcrSelection, ...]:
    """A TPML_PCR_SELECTION at the reader's position."""
    start = reader.pos
    count = reader.u32(field + ".count")
    if count > MAX_PCR_BANKS:
        raise reader.fail(f"{field} lists {count} banks, more than {MAX_PCR_BANKS}", start)
    selections = []
    for i in range(count):
        data, pos = reader.data, reader.pos
        if pos + 3 <= len(data):  # hash and sizeofSelect in one read
            alg_id, size = _SELECT_HEAD.unpack_from(data, pos)
            reader.pos = pos + 3
        else:
            alg_id = reader.u16(f"{field}[{i}].hash")
            size = reader.u8(f"{field}[{i}].sizeofSelect")
        if reader.pos + size > len(data):
            reader.take(size, f"{field}[{i}].pcrSelect")  # raises, naming the field
        selections.append(_selection(alg_id, reader.take(size, "pcrSelect")))
    return tuple(selections)


_SELECT_HEAD = struct.Struct(">HB")


@functools.lru_cache(maxsize=256)
def _selection(alg_id: int, bitmap: bytes) -> PcrSelection:
    """(Kept: a fleet quotes a handful of selections, every quote decodes one.)"""
    return PcrSelection(
        alg_id,
        tuple(n * 8 + bit for n, byte in enumerate(bitmap) for bit in range(8) if byte >> bit & 1),
    )


def encode_pcr_selection(selection: tuple[PcrSelection, ...], size_of_select: int = 3) -> bytes:
    """A TPML_PCR_SELECTION (the inverse of :func:`read_pcr_selection`)."""
    out = [_U32.pack(len(selection))]
    for sel in selection:
        width = max(size_of_select, (max(sel.pcrs, default=0) // 8) + 1)
        bitmap = bytearray(width)
        for pcr in sel.pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        out.append(_U16.pack(sel.alg_id) + _U8.pack(width) + bytes(bitmap))
    return b"".join(out)


# --- TPMS_ATTEST -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """TPMS_CLOCK_INFO: milliseconds the TPM has been powered, reset/restart counters, safe."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "clock": self.clock,
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "safe": self.safe,
        }


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO: the PCR selection and the digest of the selected PCRs' values."""

    selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO: the certified object's name and qualified name."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True, slots=True)
class CreationInfo:
    """TPMS_CREATION_INFO: the created object's name and the creation data's hash."""

    object_name: bytes
    creation_hash: bytes


@dataclass(frozen=True, slots=True)
class Attest:
    """A parsed TPMS_ATTEST. ``quote``/``certify``/``creation`` is set for its type; for other
    types the body is kept unparsed in ``body``. ``raw`` is the whole structure (what is signed).
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    raw: bytes
    quote: QuoteInfo | None = None
    certify: CertifyInfo | None = None
    creation: CreationInfo | None = None
    body: bytes = b""

    @property
    def type_name(self) -> str:
        return attest_type_name(self.type)


def parse_attest(data: bytes | bytearray | memoryview) -> Attest:
    """Parse a TPMS_ATTEST (the content of TPM2B_ATTEST; what ``tpm2_quote -m`` writes).

    The magic is read but not judged here (:func:`hostseal.attest.verify_quote` refuses a value
    other than TPM_GENERATED_VALUE); the body is parsed for quotes, certifications and creation
    attestations. Raises :class:`QuoteMalformed`.
    """
    raw = bytes(data)
    r = Reader(raw, "TPMS_ATTEST")
    if len(raw) >= 6:  # one read; field by field only to say what is missing
        magic, kind = _MAGIC_TYPE.unpack_from(raw)
        r.pos = 6
    else:
        magic = r.u32("magic")
        kind = r.u16("type")
    signer = r.tpm2b("qualifiedSigner", MAX_NAME)
    extra = r.tpm2b("extraData", MAX_NAME)
    if len(raw) - r.pos >= _CLOCK_FIRMWARE.size:  # one read, as above
        ticks, resets, restarts, safe, firmware = _CLOCK_FIRMWARE.unpack_from(raw, r.pos)
        r.pos += _CLOCK_FIRMWARE.size
        clock = ClockInfo(ticks, resets, restarts, bool(safe))
    else:
        clock = ClockInfo(
            r.u64("clockInfo.clock"),
            r.u32("clockInfo.resetCount"),
            r.u32("clockInfo.restartCount"),
            bool(r.u8("clockInfo.safe")),
        )
        firmware = r.u64("firmwareVersion")
    common = (magic, kind, signer, extra, clock, firmware, raw)
    if kind == ST_ATTEST_QUOTE:
        selection = read_pcr_selection(r, "quote.pcrSelect")
        digest = r.tpm2b("quote.pcrDigest", MAX_DIGEST)
        r.end()
        return Attest(*common, quote=QuoteInfo(selection, digest))
    if kind == ST_ATTEST_CERTIFY:
        certify = CertifyInfo(
            r.tpm2b("certify.name", MAX_NAME), r.tpm2b("certify.qualifiedName", MAX_NAME)
        )
        r.end()
        return Attest(*common, certify=certify)
    if kind == ST_ATTEST_CREATION:
        creation = CreationInfo(
            r.tpm2b("creation.objectName", MAX_NAME),
            r.tpm2b("creation.creationHash", MAX_DIGEST),
        )
        r.end()
        return Attest(*common, creation=creation)
    return Attest(*common, body=r.take(r.left, "attested"))


_SIG_HEAD = struct.Struct(">HHH")  # sigAlg, hash, the size of the first TPM2B
_QUOTE_HEAD = struct.Struct(">IHH")  # magic, type, the size of qualifiedSigner


def quote_fields(
    raw: bytes,
) -> tuple[tuple[PcrSelection, ...], bytes, bytes, ClockInfo, int, bytes] | None:
    """A well-formed quote's (selection, pcrDigest, extraData, clockInfo, firmwareVersion,
    qualifiedSigner) in one pass, as :func:`parse_attest` reads them; None for anything else
    (not a quote, truncated, oversized, trailing bytes): :func:`parse_attest` then says what.
    The service checks a quote per attestation; this is that path without the object tree."""
    n = len(raw)
    if n < 8:
        return None
    magic, kind, size = _QUOTE_HEAD.unpack_from(raw)
    if magic != TPM_GENERATED_VALUE or kind != ST_ATTEST_QUOTE or size > MAX_NAME:
        return None
    pos = 8 + size
    if pos + 2 > n:
        return None
    signer = raw[8:pos]
    size = raw[pos] << 8 | raw[pos + 1]
    pos += 2
    if size > MAX_NAME or pos + size + _CLOCK_FIRMWARE.size + 4 > n:
        return None
    extra = raw[pos : pos + size]
    pos += size
    ticks, resets, restarts, safe, firmware = _CLOCK_FIRMWARE.unpack_from(raw, pos)
    pos += _CLOCK_FIRMWARE.size
    (count,) = _U32.unpack_from(raw, pos)
    pos += 4
    if count > MAX_PCR_BANKS:
        return None
    selections = []
    for _ in range(count):
        if pos + 3 > n:
            return None
        alg_id, size = _SELECT_HEAD.unpack_from(raw, pos)
        pos += 3
        if pos + size > n:
            return None
        selections.append(_selection(alg_id, raw[pos : pos + size]))
        pos += size
    if pos + 2 > n:
        return None
    size = raw[pos] << 8 | raw[pos + 1]
    pos += 2
    if size > MAX_DIGEST or pos + size != n:
        return None
    clock = ClockInfo(ticks, resets, restarts, bool(safe))
    return tuple(selections), raw[pos:], extra, clock, firmware, signer


def encode_quote_attest(
    *,
    extra_data: bytes,
    selection: tuple[PcrSelection, ...],
    pcr_digest: bytes,
    qualified_signer: bytes = b"",
    clock_info: ClockInfo = ClockInfo(0, 0, 0, True),
    firmware_version: int = 0,
) -> bytes:
    """A TPMS_ATTEST of type quote, as a TPM marshals it (for tests, benchmarks, simulators:
    only a TPM's signature makes it evidence)."""
    return b"".join(
        (
            _U32.pack(TPM_GENERATED_VALUE),
            _U16.pack(ST_ATTEST_QUOTE),
            _U16.pack(len(qualified_signer)) + qualified_signer,
            _U16.pack(len(extra_data)) + extra_data,
            _U64.pack(clock_info.clock),
            _U32.pack(clock_info.reset_count) + _U32.pack(clock_info.restart_count),
            _U8.pack(int(clock_info.safe)),
            _U64.pack(firmware_version),
            encode_pcr_selection(selection),
            _U16.pack(len(pcr_digest)) + pcr_digest,
        )
    )


# --- TPMT_SIGNATURE ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """A parsed TPMT_SIGNATURE: RSASSA or RSAPSS (``rsa_sig``) or ECDSA (``r``, ``s``)."""

    sig_alg: int
    hash_alg: int
    rsa_sig: bytes = b""
    r: bytes = b""
    s: bytes = b""

    @property
    def scheme(self) -> str:
        return alg_name(self.sig_alg)

    @property
    def hash(self) -> HashAlg:
        return HASHES[self.hash_alg]

    def to_bytes(self) -> bytes:
        """The marshalled TPMT_SIGNATURE."""
        head = _U16.pack(self.sig_alg) + _U16.pack(self.hash_alg)
        if self.sig_alg == ALG_ECDSA:
            return head + _U16.pack(len(self.r)) + self.r + _U16.pack(len(self.s)) + self.s
        return head + _U16.pack(len(self.rsa_sig)) + self.rsa_sig

    def to_dict(self) -> dict[str, object]:
        return {"scheme": self.scheme, "hash": self.hash.name}


def parse_signature(data: bytes | bytearray | memoryview) -> Signature:
    """Parse a TPMT_SIGNATURE (what ``tpm2_quote -s`` writes). Raises :class:`QuoteMalformed`
    for a malformed one or a scheme hostseal does not verify (RSASSA, RSAPSS, ECDSA are)."""
    raw = bytes(data)
    if len(raw) >= 6:  # the well-formed case in one read; anything else field by field below
        sig_alg, hash_alg, size = _SIG_HEAD.unpack_from(raw)
        if hash_alg in HASHES:
            if sig_alg in (ALG_RSASSA, ALG_RSAPSS) and size <= 2048 and len(raw) == 6 + size:
                return Signature(sig_alg, hash_alg, rsa_sig=raw[6:])
            if sig_alg == ALG_ECDSA and size <= 128 and len(raw) >= 8 + size:
                end = 6 + size
                s_size = raw[end] << 8 | raw[end + 1]
                if s_size <= 128 and len(raw) == end + 2 + s_size:
                    return Signature(sig_alg, hash_alg, r=raw[6:end], s=raw[end + 2 :])
    return read_signature(raw)


def read_signature(raw: bytes) -> Signature:
    """:func:`parse_signature` field by field, naming what is wrong (and its reference)."""
    r = Reader(raw, "TPMT_SIGNATURE")
    sig_alg = r.u16("sigAlg")
    if sig_alg not in SIGNATURE_SCHEMES:
        raise r.fail(
            f"the signature algorithm is {alg_name(sig_alg)} (0x{sig_alg:04x}); hostseal "
            "verifies RSASSA (0x0014), RSAPSS (0x0016) and ECDSA (0x0018) signatures",
            0,
        )
    hash_alg = r.u16("hash")
    hash_of(r, hash_alg, "the signature's hash", 2)
    if sig_alg == ALG_ECDSA:
        sig_r = r.tpm2b("signatureR", 128)
        sig_s = r.tpm2b("signatureS", 128)
        r.end()
        return Signature(sig_alg, hash_alg, r=sig_r, s=sig_s)
    value = r.tpm2b("sig", 2048)
    r.end()
    return Signature(sig_alg, hash_alg, rsa_sig=value)
