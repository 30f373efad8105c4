"""``local.tgz.ve``: the configuration archive encrypted with AES-256-GCM under the data key.

Layout (big-endian), 36 header bytes then the ciphertext::

    offset size field
         0    4 magic              b"HSVE"  (not gzip's 1f 8b: ``tar xzf`` refuses the file)
         4    2 format version     1
         6    2 flags              bit 0 mode TPM, bit 1 require Secure Boot,
                                   bit 2 require exec-installed-only; other bits 0
         8    8 generation         the save counter, as in encryption.info
        16   12 nonce              random, fresh for every save
        28    8 ciphertext length  bytes after the header, GCM tag (16) included
        36    n ciphertext || tag

The whole header is the GCM associated data, so none of its bytes can be changed without the
decryption failing. Because mode, requirements and generation are in it, an ``encryption.info``
edited to relax the requirements, or taken from another save, is caught after decryption
(:class:`BundleMismatch`). The plaintext is the archive made by
:func:`~hostseal.secureconfig.archive.pack_dirs`.

Pure: bytes and keys in, bytes out.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hostseal.secureconfig.errors import BundleCorrupt, BundleMismatch, PayloadAuthenticationFailed
from hostseal.secureconfig.info import MAX_GENERATION, EncryptionInfo, Mode, Requirements

__all__ = [
    "PAYLOAD_HEADER_SIZE",
    "PAYLOAD_MAGIC",
    "PAYLOAD_VERSION",
    "PayloadHeader",
    "PayloadHeaderFields",
    "decrypt_payload",
    "encrypt_payload",
    "read_payload_header",
]

PAYLOAD_MAGIC = b"HSVE"
PAYLOAD_VERSION = 1
_HEADER = struct.Struct(">4sHHQ12sQ")
PAYLOAD_HEADER_SIZE = _HEADER.size
_TAG_BYTES = 16
_FLAG_TPM = 1
_FLAG_SECURE_BOOT = 2
_FLAG_EXEC_INSTALLED_ONLY = 4
_KNOWN_FLAGS = _FLAG_TPM | _FLAG_SECURE_BOOT | _FLAG_EXEC_INSTALLED_ONLY


@dataclass(frozen=True)
class PayloadHeaderFields:
    """What the header binds to the ciphertext besides the nonce and length."""

    generation: int
    mode: Mode
    requirements: Requirements

    @classmethod
    def from_info(cls, info: EncryptionInfo) -> PayloadHeaderFields:
        """The fields that ``info`` says the payload must carry."""
        return cls(info.generation, info.mode, info.requirements)

    def flags(self) -> int:
        return (
            (_FLAG_TPM if self.mode is Mode.TPM else 0)
            | (_FLAG_SECURE_BOOT if self.requirements.require_secure_boot else 0)
            | (_FLAG_EXEC_INSTALLED_ONLY if self.requirements.require_exec_installed_only else 0)
        )


@dataclass(frozen=True)
class PayloadHeader:
    """A parsed header: its fields, the nonce, the ciphertext length and the raw bytes."""

    fields: PayloadHeaderFields
    version: int
    nonce: bytes
    ciphertext_length: int
    raw: bytes


def _check_key(data_key: bytes) -> None:
    if len(data_key) != 32:
        raise ValueError(f"the data key is 32 bytes, not {len(data_key)}")


def encrypt_payload(data_key: bytes, plaintext: bytes, header_fields: PayloadHeaderFields) -> bytes:
    """``local.tgz.ve``: header, then AES-256-GCM of ``plaintext`` with the header as AAD."""
    _check_key(data_key)
    if not 0 <= header_fields.generation <= MAX_GENERATION:
        raise ValueError(f"generation must be between 0 and {MAX_GENERATION}")
    nonce = os.urandom(12)
    header = _HEADER.pack(
        PAYLOAD_MAGIC,
        PAYLOAD_VERSION,
        header_fields.flags(),
        header_fields.generation,
        nonce,
        len(plaintext) + _TAG_BYTES,
    )
    return header + AESGCM(data_key).encrypt(nonce, plaintext, header)


def read_payload_header(blob: bytes | memoryview) -> PayloadHeader:
    """Parse and check the header of ``local.tgz.ve`` (not yet authenticated).

    Raises :class:`BundleCorrupt` for a wrong magic, an unknown version or flags, a truncated
    file or bytes past the declared length.
    """
    if len(blob) < PAYLOAD_HEADER_SIZE:
        raise BundleCorrupt(
            f"local.tgz.ve is truncated: {len(blob)} bytes, shorter than its "
            f"{PAYLOAD_HEADER_SIZE}-byte header."
        )
    raw = bytes(blob[:PAYLOAD_HEADER_SIZE])
    magic, version, flags, generation, nonce, length = _HEADER.unpack(raw)
    if magic != PAYLOAD_MAGIC:
        raise BundleCorrupt(
            f"local.tgz.ve does not start with {PAYLOAD_MAGIC!r} (found {magic!r}): it is not an "
            "encrypted hostseal configuration."
        )
    if version != PAYLOAD_VERSION:
        raise BundleCorrupt(
            f"local.tgz.ve has format version {version}; this hostseal reads version "
            f"{PAYLOAD_VERSION} only.",
            "Unlock it with the hostseal version that wrote it, or upgrade hostseal.",
        )
    if flags & ~_KNOWN_FLAGS:
        raise BundleCorrupt(f"local.tgz.ve has unknown header flags 0x{flags:04x}.")
    if generation > MAX_GENERATION:
        raise BundleCorrupt(f"local.tgz.ve has an impossible generation {generation}.")
    if length < _TAG_BYTES:
        raise BundleCorrupt(f"local.tgz.ve declares an impossible ciphertext length {length}.")
    actual = len(blob) - PAYLOAD_HEADER_SIZE
    if actual < length:
        raise BundleCorrupt(
            f"local.tgz.ve is truncated: its header declares {length} bytes of ciphertext, "
            f"the file holds {actual}."
        )
    if actual > length:
        raise BundleCorrupt(
            f"local.tgz.ve has {actual - length} unexpected bytes after its ciphertext."
        )
    fields = PayloadHeaderFields(
        generation=generation,
        mode=Mode.TPM if flags & _FLAG_TPM else Mode.NONE,
        requirements=Requirements(
            require_secure_boot=bool(flags & _FLAG_SECURE_BOOT),
            require_exec_installed_only=bool(flags & _FLAG_EXEC_INSTALLED_ONLY),
        ),
    )
    return PayloadHeader(fields, version, nonce, length, raw)


def decrypt_payload(
    data_key: bytes, blob: bytes | memoryview, expected: PayloadHeaderFields | None = None
) -> bytes:
    """The plaintext archive of ``local.tgz.ve``.

    Raises :class:`BundleCorrupt` (bad header, truncation), :class:`PayloadAuthenticationFailed`
    (the GCM tag does not verify: changed bytes, or not this file's key) and, when ``expected``
    is given (normally ``PayloadHeaderFields.from_info(info)``), :class:`BundleMismatch` if the
    authenticated header disagrees with it.
    """
    _check_key(data_key)
    header = read_payload_header(blob)
    try:
        plaintext = AESGCM(data_key).decrypt(
            header.nonce, memoryview(blob)[PAYLOAD_HEADER_SIZE:], header.raw
        )
    except InvalidTag:
        raise PayloadAuthenticationFailed(
            "local.tgz.ve failed authentication: its bytes were changed or damaged, or the key "
            "used is not the one it was saved with.",
            "Restore state.tgz from a backup taken on this host.",
        ) from None
    if expected is not None and expected != header.fields:
        raise BundleMismatch(_mismatch(expected, header.fields))
    return plaintext


def _mismatch(info: PayloadHeaderFields, sealed: PayloadHeaderFields) -> str:
    if info.generation != sealed.generation:
        return (
            f"encryption.info is from save {info.generation} but local.tgz.ve from save "
            f"{sealed.generation}: the two files do not belong together."
        )
    if info.mode != sealed.mode:
        return (
            f"encryption.info says mode {info.mode} but local.tgz.ve was saved in mode "
            f"{sealed.mode}: encryption.info was changed."
        )
    return (
        "encryption.info was changed after the configuration was saved: its requirements "
        f"({_describe(info.requirements)}) differ from those saved with the configuration "
        f"({_describe(sealed.requirements)})."
    )


def _describe(req: Requirements) -> str:
    return (
        f"require Secure Boot {str(req.require_secure_boot).lower()}, require exec installed "
        f"only {str(req.require_exec_installed_only).lower()}"
    )
