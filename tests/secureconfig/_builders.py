"""Builders shared by the secureconfig tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hostseal.secureconfig import (
    EncryptionInfo,
    Mode,
    RecoveryKey,
    RecoverySlot,
    Requirements,
    TpmSlot,
)

SAVED_AT = datetime(2025, 3, 1, 12, 30, 0, tzinfo=UTC)


def tpm_slot() -> TpmSlot:
    return TpmSlot(
        sealed_public=b"\x00\x4e" + b"P" * 78,
        sealed_private=b"\x00\x9e" + b"S" * 158,
        pcr_bank="sha256",
        pcrs=[0, 2, 4, 7],
        policy_digest=bytes(range(32)),
        primary="ecc-p256-storage",
        tpm_ek_fingerprint="sha256:" + "ab" * 32,
    )


def tpm_info(
    data_key: bytes, *keys: RecoveryKey, generation: int = 7, secure_boot: bool = True
) -> EncryptionInfo:
    return EncryptionInfo(
        mode=Mode.TPM,
        requirements=Requirements(require_secure_boot=secure_boot),
        generation=generation,
        saved_at=SAVED_AT,
        tpm_slot=tpm_slot(),
        recovery_slots=[RecoverySlot.create(data_key, k) for k in keys],
        seal_boot_summary={"secure_boot": True, "pcrs": {"7": "00" * 32}},
    )
