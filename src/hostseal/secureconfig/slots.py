"""Key slots: one 256-bit data key, wrapped several times.

The data key encrypts ``local.tgz.ve``. Each slot holds the data key wrapped under a different
key-encryption key:

* :class:`TpmSlot` -- the data key sealed in the TPM under a PCR policy (a record only; the sealing
  and unsealing live in :mod:`hostseal.tpm`);
* :class:`RecoverySlot` -- wrapped under a key derived from a recovery key's 256-bit secret;
* :class:`NoneModeSlot` -- mode NONE: wrapped under a key derived from inputs stored next to it.
  That is **obfuscation, not encryption**.

Wrapping is AES-256-GCM with a random 96-bit nonce; the slot's own metadata (kind, version, ID,
salt, iterations) is the associated data, so a slot whose metadata was edited does not open.

Pure: keys and bytes in, slots out (wrapping draws random nonces and salts).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from hostseal.secureconfig.errors import BundleCorrupt, NoRecoverySlotMatches
from hostseal.secureconfig.recoverykey import (
    RECOVERY_SECRET_BYTES,
    RecoveryKey,
    derive_recovery_wrapping_key,
    format_recovery_id,
)

DATA_KEY_BYTES = 32
SALT_BYTES = 32
NONCE_BYTES = 12
WRAPPED_KEY_BYTES = DATA_KEY_BYTES + 16  # ciphertext + GCM tag
NONE_MODE_ITERATIONS = 100_000
"""PBKDF2-HMAC-SHA256 rounds of a NONE-mode slot, as ESXi uses."""
NONE_MODE_MAX_ITERATIONS = 10_000_000
"""The most rounds a NONE-mode slot read from disk may ask for (a bound on the work it causes)."""


def generate_data_key() -> bytes:
    """A new 256-bit data key from the OS's CSPRNG."""
    return os.urandom(DATA_KEY_BYTES)


def _check_len(name: str, value: bytes, length: int) -> None:
    if len(value) != length:
        raise ValueError(f"{name} must be {length} bytes, not {len(value)}")


def _wrap(kek: bytes, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
    _check_len("data key", data_key, DATA_KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(kek).encrypt(nonce, data_key, aad)


def _unwrap(kek: bytes, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes | None:
    try:
        return AESGCM(kek).decrypt(nonce, wrapped, aad)
    except InvalidTag:
        return None


@dataclass(frozen=True)
class RecoverySlot:
    """The data key wrapped under ``HKDF-SHA256(recovery secret, salt)`` with AES-256-GCM."""

    KDF: ClassVar[str] = "hkdf-sha256"
    WRAP: ClassVar[str] = "aes-256-gcm"

    recovery_id: UUID
    salt: bytes
    nonce: bytes
    wrapped_key: bytes

    def __post_init__(self) -> None:
        _check_len("salt", self.salt, SALT_BYTES)
        _check_len("nonce", self.nonce, NONCE_BYTES)
        _check_len("wrapped key", self.wrapped_key, WRAPPED_KEY_BYTES)

    @classmethod
    def create(cls, data_key: bytes, recovery_key: RecoveryKey) -> RecoverySlot:
        """A new slot that opens ``data_key`` with ``recovery_key``; fresh salt and nonce."""
        salt = os.urandom(SALT_BYTES)
        kek = derive_recovery_wrapping_key(recovery_key.secret, salt)
        nonce, wrapped = _wrap(kek, data_key, _recovery_aad(recovery_key.recovery_id, salt))
        return cls(recovery_key.recovery_id, salt, nonce, wrapped)

    @property
    def formatted_id(self) -> str:
        return format_recovery_id(self.recovery_id)

    def associated_data(self) -> bytes:
        """What the wrapping authenticates besides the data key."""
        return _recovery_aad(self.recovery_id, self.salt)

    def try_open(self, secret: bytes) -> bytes | None:
        """The data key if ``secret`` is this slot's recovery secret, else ``None``."""
        kek = derive_recovery_wrapping_key(secret, self.salt)
        return _unwrap(kek, self.nonce, self.wrapped_key, self.associated_data())


def _recovery_aad(recovery_id: UUID, salt: bytes) -> bytes:
    return b"hostseal recovery slot v1\x00hkdf-sha256\x00aes-256-gcm\x00" + recovery_id.bytes + salt


def open_recovery_slots(slots: Sequence[RecoverySlot], secret: bytes) -> tuple[bytes, RecoverySlot]:
    """The data key and the slot that ``secret`` opens.

    Every slot is tried, whichever matches, so the work done (and the time taken) does not tell
    which slot matched. Raises :class:`NoRecoverySlotMatches` when none does.
    """
    if len(secret) != RECOVERY_SECRET_BYTES:
        raise ValueError(f"a recovery secret is {RECOVERY_SECRET_BYTES} bytes, not {len(secret)}")
    if not slots:
        raise NoRecoverySlotMatches(
            "This configuration has no recovery slot, so no recovery key can unlock it.",
            "Unlock it with the TPM on the host that sealed it, or restore a backup that has a "
            "recovery key.",
        )
    found: tuple[bytes, RecoverySlot] | None = None
    for slot in slots:
        key = slot.try_open(secret)
        if key is not None and found is None:
            found = (key, slot)
    if found is None:
        ids = ", ".join(s.formatted_id for s in slots)
        raise NoRecoverySlotMatches(
            "The recovery key is well-formed but matches no recovery slot of this configuration: "
            f"it is not one of its {len(slots)} recovery key{'' if len(slots) == 1 else 's'} "
            f"({ids}).",
            "Use the key saved under one of these Recovery IDs; a key saved before the last "
            "rotation no longer works.",
        )
    return found


def recovery_ids(slots: Iterable[RecoverySlot]) -> list[UUID]:
    """The recovery IDs of ``slots``, in order."""
    return [s.recovery_id for s in slots]


@dataclass(frozen=True)
class NoneModeSlot:
    """Mode NONE (no TPM): **obfuscation, not encryption**.

    The key-encryption key is PBKDF2-HMAC-SHA256 (100,000 rounds, as ESXi) over a random salt and
    random "passphrase" material that are stored in this very slot, in the same file as the
    encrypted data. Anyone who copies the disk and knows this format can derive the key: it keeps
    the configuration from being read with ``tar`` and ``grep``, nothing more. Use mode TPM to
    protect it.
    """

    PROTECTION: ClassVar[str] = "obfuscation, not encryption"
    IS_ENCRYPTION: ClassVar[bool] = False
    KDF: ClassVar[str] = "pbkdf2-hmac-sha256"
    WRAP: ClassVar[str] = "aes-256-gcm"

    salt: bytes
    passphrase: bytes
    iterations: int
    nonce: bytes
    wrapped_key: bytes

    def __post_init__(self) -> None:
        _check_len("salt", self.salt, SALT_BYTES)
        _check_len("passphrase", self.passphrase, SALT_BYTES)
        _check_len("nonce", self.nonce, NONCE_BYTES)
        _check_len("wrapped key", self.wrapped_key, WRAPPED_KEY_BYTES)
        if not 1 <= self.iterations <= NONE_MODE_MAX_ITERATIONS:
            raise ValueError(f"iterations must be 1..{NONE_MODE_MAX_ITERATIONS}")

    @property
    def protection(self) -> str:
        """``"obfuscation, not encryption"``: say it wherever this mode is shown."""
        return self.PROTECTION

    @classmethod
    def create(cls, data_key: bytes, iterations: int = NONE_MODE_ITERATIONS) -> NoneModeSlot:
        """A NONE-mode slot for ``data_key`` with fresh random salt, passphrase and nonce."""
        salt = os.urandom(SALT_BYTES)
        passphrase = os.urandom(SALT_BYTES)
        kek = _pbkdf2(passphrase, salt, iterations)
        nonce, wrapped = _wrap(kek, data_key, _none_aad(iterations, salt))
        return cls(salt, passphrase, iterations, nonce, wrapped)

    def associated_data(self) -> bytes:
        return _none_aad(self.iterations, self.salt)

    def open(self) -> bytes:
        """The data key. Raises :class:`BundleCorrupt` if the slot was damaged or edited."""
        kek = _pbkdf2(self.passphrase, self.salt, self.iterations)
        key = _unwrap(kek, self.nonce, self.wrapped_key, self.associated_data())
        if key is None:
            raise BundleCorrupt(
                "The NONE-mode key slot of encryption.info does not open: the file was damaged "
                "or edited."
            )
        return key


def _pbkdf2(passphrase: bytes, salt: bytes, iterations: int) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    return kdf.derive(passphrase)


def _none_aad(iterations: int, salt: bytes) -> bytes:
    return (
        b"hostseal none-mode slot v1\x00pbkdf2-hmac-sha256\x00aes-256-gcm\x00"
        + iterations.to_bytes(8, "big")
        + salt
    )


@dataclass(frozen=True)
class TpmSlot:
    """The data key sealed in the TPM: a record of what :mod:`hostseal.tpm` needs to unseal it.

    ``sealed_public``/``sealed_private`` are the TPM2B_PUBLIC/TPM2B_PRIVATE of the sealed object,
    created under the primary key named by ``primary`` (e.g. ``"ecc-p256-storage"``) with the
    policy ``policy_digest`` over ``pcrs`` of ``pcr_bank`` (e.g. ``"sha256"``).
    ``tpm_ek_fingerprint`` identifies the TPM it was sealed to (shown when it is missing).
    This module holds no TPM code.
    """

    sealed_public: bytes
    sealed_private: bytes
    pcr_bank: str
    pcrs: list[int]
    policy_digest: bytes
    primary: str
    tpm_ek_fingerprint: str
