"""TPMT_PUBLIC / TPM2B_PUBLIC of RSA and ECC keys, and the attestation key (AK) loader.

Bounds-checked like :mod:`hostseal.attest.tpm_structures`: malformed bytes raise only
:class:`~hostseal.attest.errors.QuoteMalformed`.

>>> ak = load_ak_public(ak_pub_bytes)  # TPM2B_PUBLIC, TPMT_PUBLIC, PEM or DER  # doctest: +SKIP
>>> ak.name.hex()                      # nameAlg || H(TPMT_PUBLIC); None for PEM # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hostseal.attest.errors import QuoteMalformed
from hostseal.attest.tpm_structures import (
    _U16,
    ALG_ECC,
    ALG_ECDAA,
    ALG_NULL,
    ALG_RSA,
    ALG_RSAES,
    ATTR_DECRYPT,
    ATTR_RESTRICTED,
    ATTR_SIGN,
    CURVES,
    HASHES,
    MAX_DIGEST,
    Reader,
    alg_name,
    hash_of,
)

_RSA_SCHEMES_WITH_HASH = {0x0014, 0x0016, 0x0017}  # RSASSA, RSAPSS, OAEP
_ECC_SCHEMES_WITH_HASH = {0x0018, 0x001B, 0x001C, 0x0019, 0x001D}  # ECDSA, SM2, SCHNORR, ECDH, MQV
_SYMMETRIC = {0x0006, 0x0013, 0x0026}  # AES, SM4, CAMELLIA
_KDFS = {0x0007, 0x0020, 0x0021, 0x0022}  # MGF1, KDF1_SP800_56A, KDF2, KDF1_SP800_108


# --- TPMT_PUBLIC -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RsaDetail:
    key_bits: int
    exponent: int  # the real exponent (0 in the structure means 65537)
    modulus: bytes


@dataclass(frozen=True, slots=True)
class EccDetail:
    curve: int  # TPM_ECC_CURVE
    kdf: int
    kdf_hash: int
    x: bytes
    y: bytes


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC of an RSA or ECC key. ``raw`` is the TPMT_PUBLIC bytes."""

    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    symmetric: int  # TPM_ALG_NULL, or AES/SM4/CAMELLIA with ``sym_key_bits``/``sym_mode``
    sym_key_bits: int
    sym_mode: int
    scheme: int  # TPM_ALG_NULL when the key has no fixed scheme
    scheme_hash: int  # TPM_ALG_NULL when the scheme has no hash
    raw: bytes
    rsa_params: RsaDetail | None = None
    ecc_params: EccDetail | None = None

    @property
    def name(self) -> bytes:
        """The TPM name: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC)."""
        return _U16.pack(self.name_alg) + HASHES[self.name_alg].digest(self.raw)

    @property
    def restricted_signing(self) -> bool:
        """A restricted signing key: signs only TPM-generated data (what an AK must be)."""
        wanted = ATTR_RESTRICTED | ATTR_SIGN
        return self.attributes & wanted == wanted and not self.attributes & ATTR_DECRYPT

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as a ``cryptography`` public key. Raises :class:`QuoteMalformed`."""
        try:
            if self.rsa_params is not None:
                n = int.from_bytes(self.rsa_params.modulus, "big")
                return rsa.RSAPublicNumbers(self.rsa_params.exponent, n).public_key()
            assert self.ecc_params is not None
            curve = CURVES[self.ecc_params.curve][1]()
            x, y = (
                int.from_bytes(self.ecc_params.x, "big"),
                int.from_bytes(self.ecc_params.y, "big"),
            )
            return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
        except (ValueError, UnsupportedAlgorithm) as err:
            raise QuoteMalformed(
                f"TPMT_PUBLIC: the {alg_name(self.type).upper()} public key is not valid ({err}).",
                structure="TPMT_PUBLIC",
            ) from None


def parse_public(data: bytes | bytearray | memoryview) -> TpmPublic:
    """Parse a TPMT_PUBLIC of an RSA or ECC key. Raises :class:`QuoteMalformed`."""
    raw = bytes(data)
    r = Reader(raw, "TPMT_PUBLIC")
    kind = r.u16("type")
    if kind not in (ALG_RSA, ALG_ECC):
        raise r.fail(f"the key type is {alg_name(kind)} (0x{kind:04x}), not RSA or ECC", 0)
    name_alg = r.u16("nameAlg")
    hash_of(r, name_alg, "nameAlg", 2)
    attributes = r.u32("objectAttributes")
    policy = r.tpm2b("authPolicy", MAX_DIGEST)
    at = r.pos
    symmetric = r.u16("symmetric.algorithm")
    key_bits = mode = 0
    if symmetric in _SYMMETRIC:
        key_bits, mode = r.u16("symmetric.keyBits"), r.u16("symmetric.mode")
    elif symmetric != ALG_NULL:
        raise r.fail(f"unknown symmetric algorithm 0x{symmetric:04x}", at)
    at = r.pos
    scheme = r.u16("scheme.scheme")
    scheme_hash = ALG_NULL
    rsa_detail: RsaDetail | None = None
    ecc_detail: EccDetail | None = None
    if kind == ALG_RSA:
        if scheme in _RSA_SCHEMES_WITH_HASH:
            scheme_hash = r.u16("scheme.hashAlg")
        elif scheme not in (ALG_NULL, ALG_RSAES):
            raise r.fail(f"{alg_name(scheme)} (0x{scheme:04x}) is not an RSA scheme", at)
        bits = r.u16("keyBits")
        exponent = r.u32("exponent") or 65537
        modulus = r.tpm2b("unique.rsa", 2048)
        if len(modulus) * 8 != bits:
            raise r.fail(f"keyBits says {bits} but the modulus is {len(modulus) * 8} bits")
        rsa_detail = RsaDetail(bits, exponent, modulus)
    else:
        if scheme in _ECC_SCHEMES_WITH_HASH:
            scheme_hash = r.u16("scheme.hashAlg")
        elif scheme == ALG_ECDAA:
            scheme_hash = r.u16("scheme.hashAlg")
            r.u16("scheme.count")
        elif scheme != ALG_NULL:
            raise r.fail(f"{alg_name(scheme)} (0x{scheme:04x}) is not an ECC scheme", at)
        at = r.pos
        curve = r.u16("curveID")
        if curve not in CURVES:
            raise r.fail(
                f"curve 0x{curve:04x} is not supported (hostseal knows NIST P-192 to P-521)", at
            )
        at = r.pos
        kdf = r.u16("kdf.scheme")
        kdf_hash = ALG_NULL
        if kdf in _KDFS:
            kdf_hash = r.u16("kdf.hashAlg")
        elif kdf != ALG_NULL:
            raise r.fail(f"unknown KDF scheme 0x{kdf:04x}", at)
        x, y = r.tpm2b("unique.ecc.x", 128), r.tpm2b("unique.ecc.y", 128)
        ecc_detail = EccDetail(curve, kdf, kdf_hash, x, y)
    r.end()
    return TpmPublic(
        kind,
        name_alg,
        attributes,
        policy,
        symmetric,
        key_bits,
        mode,
        scheme,
        scheme_hash,
        raw,
        rsa_detail,
        ecc_detail,
    )


def parse_public_2b(data: bytes | bytearray | memoryview) -> TpmPublic:
    """Parse a TPM2B_PUBLIC (what ``tpm2_createak -u`` writes). Raises :class:`QuoteMalformed`."""
    raw = bytes(data)
    r = Reader(raw, "TPM2B_PUBLIC")
    inner = r.tpm2b("publicArea")
    r.end()
    try:
        return parse_public(inner)
    except QuoteMalformed as err:
        offset = (err.offset or 0) + 2
        raise QuoteMalformed(
            f"TPM2B_PUBLIC: {err.message}", structure="TPM2B_PUBLIC", offset=offset
        ) from None


# --- the attestation key -----------------------------------------------------------------------


@dataclass(frozen=True)
class AkPublic:
    """An attestation key: a ``cryptography`` public key, plus the TPM's view of it (``public``:
    name, attributes, scheme) when it was given as TPM2B_PUBLIC or TPMT_PUBLIC (``None`` for a
    PEM/DER key, whose TPM name is unknown)."""

    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    public: TpmPublic | None = None

    @property
    def name(self) -> bytes | None:
        return self.public.name if self.public is not None else None

    @property
    def key_type(self) -> str:
        return "rsa" if isinstance(self.key, rsa.RSAPublicKey) else "ecc"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"type": self.key_type, "name": None}
        if isinstance(self.key, rsa.RSAPublicKey):
            data["bits"] = self.key.key_size
        else:
            data["curve"] = self.key.curve.name
        if self.public is not None:
            data["name"] = self.public.name.hex()
            data["attributes"] = f"0x{self.public.attributes:08x}"
            data["restricted_signing"] = self.public.restricted_signing
            data["scheme"] = alg_name(self.public.scheme)
        return data


def load_ak_public(data: bytes | bytearray | memoryview) -> AkPublic:
    """The AK from a TPM2B_PUBLIC, a TPMT_PUBLIC, or a PEM or DER SubjectPublicKeyInfo.

    Raises :class:`QuoteMalformed` when the bytes are none of these, or not an RSA or EC key.
    """
    raw = bytes(data)
    if raw.lstrip().startswith(b"-----BEGIN") or raw[:1] == b"\x30":
        return AkPublic(_load_spki(raw))
    sized = len(raw) >= 2 and _U16.unpack_from(raw)[0] == len(raw) - 2
    typed = raw[:2] in (b"\x00\x01", b"\x00\x23")  # TPM_ALG_RSA, TPM_ALG_ECC
    if typed and not sized:
        public = parse_public(raw)
    else:
        try:
            public = parse_public_2b(raw)
        except QuoteMalformed:
            if not typed:
                raise
            public = parse_public(raw)  # a TPMT_PUBLIC whose type happens to equal its length
    return AkPublic(public.public_key(), public)


def _load_spki(raw: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    pem = raw.lstrip().startswith(b"-----BEGIN")
    try:
        if pem:
            key = serialization.load_pem_public_key(raw)
        else:
            key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm) as err:
        kind = "PEM" if pem else "DER"
        raise QuoteMalformed(
            f"The AK public key is not a valid {kind} SubjectPublicKeyInfo ({err}).",
            "Give the AK as TPM2B_PUBLIC (tpm2_createak -u), TPMT_PUBLIC, or a PEM public key "
            "('-----BEGIN PUBLIC KEY-----', tpm2_createak -f pem).",
            structure=kind,
            offset=0,
        ) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise QuoteMalformed(
            f"The AK public key is a {type(key).__name__}, not an RSA or EC key.",
            "A TPM attestation key is RSA or ECC: give the AK's public key.",
            structure="PEM" if pem else "DER",
            offset=0,
        )
    return key
