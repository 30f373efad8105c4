"""MakeCredential on the server's side (TPM 2.0 Part 1, section 24 "Credential Protection").

Enrolment proves that an attestation key (AK) lives in the same TPM as an endorsement key (EK):
the server encrypts a fresh secret so that only that TPM can recover it, and only while the AK
with the given name is loaded (TPM2_ActivateCredential). No TPM is needed on the server::

    blob, encrypted_secret = make_credential(ek_public, ak_name, secret)
    # ... host: TPM2_ActivateCredential(ak, ek, blob, encrypted_secret) -> secret

The randomness (the seed, and the ephemeral ECDH key of an ECC EK) comes from ``random_bytes``,
``os.urandom`` unless the caller passes another source: tests pass fixed bytes and compare the
result with known-answer vectors. RSA-OAEP's own padding randomness stays inside
``cryptography``; the RSA seed it protects is still the injected one.

The recipe, per the specification:

1. a random *seed* is protected with the EK: RSA-OAEP with the EK's name algorithm and the
   label ``"IDENTITY\\0"`` (RSA EK), or ephemeral ECDH on the EK's curve with
   ``seed = KDFe(Z, "IDENTITY", ephemeral.x, ek.x)`` (ECC EK);
2. ``KDFa(seed, "STORAGE", ak_name)`` gives the key of the EK's symmetric algorithm (AES-128 in
   the standard EK templates), used in CFB mode with a zero IV to encrypt the secret as a
   TPM2B_DIGEST (*encIdentity*);
3. ``KDFa(seed, "INTEGRITY")`` gives the HMAC key of the outer HMAC over
   ``encIdentity || ak_name``;
4. ``credentialBlob = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity)`` and
   ``secret = TPM2B_ENCRYPTED_SECRET(encrypted seed)``.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hostseal.attest._tpmpublic import TpmPublic, ek_public_key, parse_ek_public
from hostseal.attest.errors import AkNameInvalid, EkPublicInvalid
from hostseal.attest.tpm_structures import (
    ALG_AES,
    ALG_RSA,
    ATTR_DECRYPT,
    ATTR_RESTRICTED,
    ATTR_SIGN,
    CURVES,
    HASHES,
)

__all__ = ["aes_cfb_encrypt", "kdfa", "kdfe", "make_credential"]

IDENTITY_LABEL = b"IDENTITY"
STORAGE_LABEL = b"STORAGE"
INTEGRITY_LABEL = b"INTEGRITY"


ALG_CFB = 0x0043

RandomBytes = Callable[[int], bytes]
"""A source of random bytes: called with a length, returns that many bytes (``os.urandom``)."""


def _hash(name_alg: int) -> tuple[str, hashes.HashAlgorithm, int]:
    alg = HASHES[name_alg]
    return alg.name, alg.crypto(), alg.size


def _null_terminated(label: bytes) -> bytes:
    return label if label.endswith(b"\0") else label + b"\0"


def kdfa(
    name_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (TPM 2.0 Part 1, 11.4.10.2): SP800-108 counter-mode KDF with HMAC-``name_alg``.

    The label is NUL-terminated as the TPM does; the result has ``bits`` bits (whole bytes).
    """
    hash_name = _hash(name_alg)[0]
    out = b""
    counter = 0
    suffix = _null_terminated(label) + context_u + context_v + struct.pack(">I", bits)
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.digest(key, struct.pack(">I", counter) + suffix, hash_name)
    return out[: (bits + 7) // 8]


def kdfe(name_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (TPM 2.0 Part 1, 11.4.10.3): the SP800-56A concatenation KDF with ``name_alg``."""
    algorithm = _hash(name_alg)[1]
    out = b""
    counter = 0
    other = _null_terminated(label) + party_u + party_v
    while len(out) * 8 < bits:
        counter += 1
        h = hashes.Hash(algorithm)
        h.update(struct.pack(">I", counter) + z + other)
        out += h.finalize()
    return out[: (bits + 7) // 8]


def aes_cfb_encrypt(key: bytes, data: bytes, iv: bytes = bytes(16)) -> bytes:
    """AES in full-block CFB mode (CFB-128), as the TPM encrypts with a zero IV.

    Written over the AES block function because ``cryptography`` moved CFB to its "decrepit"
    module; the mode is still the TPM's.
    """
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 -- CFB's core
    out = bytearray()
    feedback = iv
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        stream = block.update(feedback)
        cipher = bytes(a ^ b for a, b in zip(chunk, stream, strict=False))
        out += cipher
        feedback = cipher
    return bytes(out)


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _check_ek(ek: TpmPublic) -> None:
    if ek.attributes & (ATTR_RESTRICTED | ATTR_DECRYPT) != ATTR_RESTRICTED | ATTR_DECRYPT or (
        ek.attributes & ATTR_SIGN
    ):
        raise EkPublicInvalid(
            f"The key presented as the EK is not a restricted decryption (storage) key "
            f"(objectAttributes 0x{ek.attributes:08x}), so it cannot protect a credential.",
        )
    if ek.symmetric != ALG_AES or ek.sym_key_bits not in (128, 192, 256):
        raise EkPublicInvalid(
            f"The EK's symmetric algorithm (0x{ek.symmetric:04x}, {ek.sym_key_bits} bits) is "
            "not AES; hostseal protects credentials for EKs with AES-128, -192 or -256 (the "
            "TCG EK templates use AES-128-CFB)."
        )
    if ek.sym_mode != ALG_CFB:
        raise EkPublicInvalid(
            f"The EK's symmetric mode 0x{ek.sym_mode:04x} is not CFB; a storage key's symmetric "
            "definition must use CFB (TPM 2.0 Part 2, TPMT_SYM_DEF_OBJECT)."
        )


def _check_name(ak_name: bytes) -> None:
    if len(ak_name) >= 2:
        alg = struct.unpack(">H", ak_name[:2])[0]
        if alg in HASHES and len(ak_name) == 2 + HASHES[alg].size:
            return
    raise AkNameInvalid(
        f"The AK name ({len(ak_name)} bytes: {ak_name[:6].hex()}...) is not a TPM name "
        "(a 2-byte hash algorithm followed by a digest of that algorithm's size).",
        "Send the name tpm2_createak -n writes (or tpm2_readpublic -n of the AK); it is "
        "nameAlg || H(TPMT_PUBLIC), 34 bytes for a SHA-256 name.",
    )


def _protect_seed_rsa(
    ek: TpmPublic, seed_size: int, random_bytes: RandomBytes
) -> tuple[bytes, bytes]:
    _, algorithm, _ = _hash(ek.name_alg)
    key = ek_public_key(ek)
    assert isinstance(key, rsa.RSAPublicKey)
    seed = _random(random_bytes, seed_size)
    encrypted = key.encrypt(
        seed,
        padding.OAEP(
            mgf=padding.MGF1(algorithm), algorithm=algorithm, label=IDENTITY_LABEL + b"\0"
        ),
    )
    return seed, encrypted


def _protect_seed_ecc(
    ek: TpmPublic, seed_size: int, random_bytes: RandomBytes
) -> tuple[bytes, bytes]:
    key = ek_public_key(ek)
    assert isinstance(key, ec.EllipticCurvePublicKey) and ek.ecc_params is not None
    _, curve_class, coordinate_size = CURVES[ek.ecc_params.curve]
    ephemeral = _ephemeral_key(curve_class(), coordinate_size, random_bytes)
    z = ephemeral.exchange(ec.ECDH(), key)  # the shared point's x, padded to the field size
    numbers = ephemeral.public_key().public_numbers()
    x = numbers.x.to_bytes(coordinate_size, "big")
    y = numbers.y.to_bytes(coordinate_size, "big")
    seed = kdfe(ek.name_alg, z, IDENTITY_LABEL, x, ek.ecc_params.x, seed_size * 8)
    return seed, _tpm2b(x) + _tpm2b(y)  # TPMS_ECC_POINT


def _random(random_bytes: RandomBytes, size: int) -> bytes:
    data = bytes(random_bytes(size))
    if len(data) != size:
        raise ValueError(f"the random source returned {len(data)} bytes, {size} were asked for")
    return data


def _ephemeral_key(
    curve: ec.EllipticCurve, coordinate_size: int, random_bytes: RandomBytes
) -> ec.EllipticCurvePrivateKey:
    """An ephemeral private key whose scalar is drawn from ``random_bytes`` (drawn again in the
    rare case the bytes are not a valid scalar: zero, or not below the curve's order)."""
    for _ in range(64):
        scalar = int.from_bytes(_random(random_bytes, coordinate_size), "big")
        if scalar == 0:
            continue
        try:
            return ec.derive_private_key(scalar, curve)
        except ValueError:  # not below the order
            continue
    raise ValueError("the random source gave no valid ECC scalar in 64 draws")


def make_credential(
    ek_public: bytes,
    ak_name: bytes,
    secret: bytes,
    *,
    random_bytes: RandomBytes = os.urandom,
) -> tuple[bytes, bytes]:
    """Protect ``secret`` for the TPM holding ``ek_public``, bound to the AK named ``ak_name``.

    ``ek_public`` is the EK's TPM2B_PUBLIC (or TPMT_PUBLIC), RSA or ECC; ``ak_name`` the AK's TPM
    name; ``secret`` at most as long as a digest of the EK's name algorithm (32 bytes for the
    standard EKs); ``random_bytes`` the source of the seed and of the ephemeral ECDH key
    (``os.urandom``; a fixed source makes the result reproducible for known-answer tests).
    Returns the marshalled TPM2B_ID_OBJECT (credentialBlob) and
    TPM2B_ENCRYPTED_SECRET, as TPM2_ActivateCredential takes them.

    Raises :class:`EkPublicInvalid` when the EK public area is malformed or is not a storage key
    with an AES-CFB symmetric definition, :class:`AkNameInvalid` for a malformed AK name.
    """
    ek = parse_ek_public(ek_public)
    _check_ek(ek)
    ak_name = bytes(ak_name)
    _check_name(ak_name)
    hash_name, _, digest_size = _hash(ek.name_alg)
    if not 1 <= len(secret) <= digest_size:
        raise ValueError(
            f"the credential secret must be 1 to {digest_size} bytes for this EK "
            f"({hash_name} name algorithm), got {len(secret)}"
        )
    protect = _protect_seed_rsa if ek.type == ALG_RSA else _protect_seed_ecc
    seed, encrypted_seed = protect(ek, digest_size, random_bytes)

    sym_key = kdfa(ek.name_alg, seed, STORAGE_LABEL, ak_name, b"", ek.sym_key_bits)
    enc_identity = aes_cfb_encrypt(sym_key, _tpm2b(bytes(secret)))

    hmac_key = kdfa(ek.name_alg, seed, INTEGRITY_LABEL, b"", b"", digest_size * 8)
    outer_hmac = hmac.digest(hmac_key, enc_identity + ak_name, hash_name)

    id_object = _tpm2b(outer_hmac) + enc_identity
    return _tpm2b(id_object), _tpm2b(encrypted_seed)
