"""The sealed host configuration: bundle format, key slots, recovery keys, atomic storage.

TPM-free: the TPM slot is a record here; :mod:`hostseal.tpm` seals and unseals its contents.
The format is described in ``docs/secure-config-format.md``.
"""

from __future__ import annotations

from hostseal.fsutil import AtomicWriteFailed, atomic_write, fsync_dir, remove_stale_temps
from hostseal.secureconfig.archive import MAX_ARCHIVE_SIZE, pack_dirs, unpack_to
from hostseal.secureconfig.bundle_file import (
    EXTRA_MEMBERS,
    INFO_MEMBER,
    PAYLOAD_MEMBER,
    SEAL_EVENTLOG_MEMBER,
    build_state_tgz,
    read_state_tgz,
)
from hostseal.secureconfig.errors import (
    BundleCorrupt,
    BundleMismatch,
    NoRecoverySlotMatches,
    PackRefused,
    PayloadAuthenticationFailed,
    RecoveryIdMalformed,
    RecoveryKeyError,
    RecoveryKeyMalformed,
    RecoveryKeyTypo,
    SecureConfigError,
    UnpackRefused,
    UnsafeArchive,
)
from hostseal.secureconfig.info import (
    INFO_FORMAT,
    INFO_VERSION,
    EncryptionInfo,
    Mode,
    Requirements,
)
from hostseal.secureconfig.payload import (
    PAYLOAD_MAGIC,
    PayloadHeader,
    PayloadHeaderFields,
    decrypt_payload,
    encrypt_payload,
    read_payload_header,
)
from hostseal.secureconfig.recoverykey import (
    RecoveryKey,
    derive_recovery_wrapping_key,
    format_recovery_id,
    format_recovery_key,
    parse_recovery_id,
    parse_recovery_key,
)
from hostseal.secureconfig.slots import (
    DATA_KEY_BYTES,
    NONE_MODE_ITERATIONS,
    NoneModeSlot,
    RecoverySlot,
    TpmSlot,
    generate_data_key,
    open_recovery_slots,
)

__all__ = [
    "DATA_KEY_BYTES",
    "EXTRA_MEMBERS",
    "INFO_FORMAT",
    "INFO_MEMBER",
    "INFO_VERSION",
    "MAX_ARCHIVE_SIZE",
    "NONE_MODE_ITERATIONS",
    "PAYLOAD_MAGIC",
    "PAYLOAD_MEMBER",
    "SEAL_EVENTLOG_MEMBER",
    "AtomicWriteFailed",
    "BundleCorrupt",
    "BundleMismatch",
    "EncryptionInfo",
    "Mode",
    "NoRecoverySlotMatches",
    "NoneModeSlot",
    "PackRefused",
    "PayloadAuthenticationFailed",
    "PayloadHeader",
    "PayloadHeaderFields",
    "RecoveryIdMalformed",
    "RecoveryKey",
    "RecoveryKeyError",
    "RecoveryKeyMalformed",
    "RecoveryKeyTypo",
    "RecoverySlot",
    "Requirements",
    "SecureConfigError",
    "TpmSlot",
    "UnpackRefused",
    "UnsafeArchive",
    "atomic_write",
    "build_state_tgz",
    "decrypt_payload",
    "derive_recovery_wrapping_key",
    "encrypt_payload",
    "format_recovery_id",
    "format_recovery_key",
    "fsync_dir",
    "generate_data_key",
    "open_recovery_slots",
    "pack_dirs",
    "parse_recovery_id",
    "parse_recovery_key",
    "read_payload_header",
    "read_state_tgz",
    "remove_stale_temps",
    "unpack_to",
]
