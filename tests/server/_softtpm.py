"""A software stand-in for a host's TPM: EK, AK, ActivateCredential, quotes, a measured boot.

Written from the TPM 2.0 specification (Part 1 section 24 for credentials, Part 2 for the
structures), independently of :mod:`hostseal.attest`, so the server's tests exercise its
verification against a second implementation. The lab + tpm2-tools tests use a real TPM.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hostseal.lab import BootConfig, measure_boot
from hostseal.measure import parse_event_log, replay

SHA256 = 0x000B
ECC = 0x0023
NULL = 0x0010
AES = 0x0006
CFB = 0x0043
ECDSA = 0x0018
P256 = 0x0003
# fixedTPM fixedParent sensitiveDataOrigin adminWithPolicy restricted decrypt
EK_ATTRIBUTES = 0x000300B2
# fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
AK_ATTRIBUTES = 0x00050072


def b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = key.public_numbers()
    return b2(numbers.x.to_bytes(32, "big")) + b2(numbers.y.to_bytes(32, "big"))


def ek_tpmt_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return (
        struct.pack(">HHI", ECC, SHA256, EK_ATTRIBUTES)
        + b2(bytes(32))
        + struct.pack(">HHH", AES, 128, CFB)
        + struct.pack(">H", NULL)
        + struct.pack(">HH", P256, NULL)
        + _point(key.public_key())
    )


def ak_tpmt_public(key: ec.EllipticCurvePrivateKey, attributes: int = AK_ATTRIBUTES) -> bytes:
    return (
        struct.pack(">HHI", ECC, SHA256, attributes)
        + b2(b"")
        + struct.pack(">H", NULL)
        + struct.pack(">HH", ECDSA, SHA256)
        + struct.pack(">HH", P256, NULL)
        + _point(key.public_key())
    )


def kdfa(key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) < bits // 8:
        data = struct.pack(">I", counter) + label + b"\0" + context_u + context_v
        out += hmac.new(key, data + struct.pack(">I", bits), hashlib.sha256).digest()
        counter += 1
    return out[: bits // 8]


def kdfe(z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    out = b""
    counter = 1
    while len(out) < bits // 8:
        data = struct.pack(">I", counter) + z + label + b"\0" + party_u + party_v
        out += hashlib.sha256(data).digest()
        counter += 1
    return out[: bits // 8]


def cfb_decrypt(key: bytes, data: bytes) -> bytes:
    block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out, feedback = bytearray(), bytes(16)
    for start in range(0, len(data), 16):
        chunk = data[start : start + 16]
        stream = block.update(feedback)
        out += bytes(a ^ b for a, b in zip(chunk, stream, strict=False))
        feedback = chunk
    return bytes(out)


def _tpm2b_at(data: bytes, pos: int) -> tuple[bytes, int]:
    (size,) = struct.unpack_from(">H", data, pos)
    return data[pos + 2 : pos + 2 + size], pos + 2 + size


@dataclass
class SoftTpm:
    """One host's TPM: keys, PCRs from a simulated boot, and its event log."""

    ek: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ak: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    boot: BootConfig = field(default_factory=BootConfig)
    eventlog: bytes = b""
    pcrs: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reboot(self.boot)

    def reboot(self, boot: BootConfig) -> None:
        self.boot = boot
        self.eventlog, _ = measure_boot(boot, ("sha256",))
        replayed = replay(parse_event_log(self.eventlog))
        self.pcrs = {"sha256": {i: replayed["sha256"].get(i, bytes(32)) for i in range(24)}}

    @property
    def ek_public(self) -> bytes:
        return b2(ek_tpmt_public(self.ek))

    @property
    def ak_public(self) -> bytes:
        return b2(ak_tpmt_public(self.ak))

    @property
    def ak_name(self) -> bytes:
        return struct.pack(">H", SHA256) + hashlib.sha256(ak_tpmt_public(self.ak)).digest()

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential with the EK, for the AK's name."""
        point, _ = _tpm2b_at(encrypted_secret, 0)
        x, pos = _tpm2b_at(point, 0)
        y, _ = _tpm2b_at(point, pos)
        ephemeral = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
        z = self.ek.exchange(ec.ECDH(), ephemeral)
        ek_x = self.ek.public_key().public_numbers().x.to_bytes(32, "big")
        seed = kdfe(z, b"IDENTITY", x, ek_x, 256)
        id_object, _ = _tpm2b_at(credential_blob, 0)
        integrity, pos = _tpm2b_at(id_object, 0)
        encrypted = id_object[pos:]
        hmac_key = kdfa(seed, b"INTEGRITY", b"", b"", 256)
        expected = hmac.new(hmac_key, encrypted + self.ak_name, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, integrity):
            raise ValueError("credential integrity check failed (TPM_RC_INTEGRITY)")
        sym = kdfa(seed, b"STORAGE", self.ak_name, b"", 128)
        secret, _ = _tpm2b_at(cfb_decrypt(sym, encrypted), 0)
        return secret

    def quote(
        self, nonce: bytes, pcrs: list[int], *, key: ec.EllipticCurvePrivateKey | None = None
    ) -> tuple[bytes, bytes, dict[str, dict[int, bytes]]]:
        """TPMS_ATTEST, TPMT_SIGNATURE and the quoted PCR values."""
        bitmap = bytearray(3)
        for index in pcrs:
            bitmap[index // 8] |= 1 << (index % 8)
        values = {i: self.pcrs["sha256"][i] for i in sorted(pcrs)}
        digest = hashlib.sha256(b"".join(values.values())).digest()
        attest = (
            struct.pack(">IH", 0xFF544347, 0x8018)
            + b2(self.ak_name)
            + b2(nonce)
            + struct.pack(">QIIB", 123456, 3, 0, 1)
            + struct.pack(">Q", 0x0002000100000000)
            + struct.pack(">IHB", 1, SHA256, 3)
            + bytes(bitmap)
            + b2(digest)
        )
        der = (key or self.ak).sign(attest, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = (
            struct.pack(">HH", ECDSA, SHA256)
            + b2(r.to_bytes(32, "big"))
            + b2(s.to_bytes(32, "big"))
        )
        return attest, signature, {"sha256": values}
