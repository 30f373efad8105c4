"""The sealed host configuration: bundle format, key slots, recovery keys, atomic storage.

Pure modules take bytes and values and return values or raise -- no files, sockets, TPM or
database (the key slots draw random nonces and salts): :mod:`~.info` (``encryption.info``),
:mod:`~.payload` (``local.tgz.ve``), :mod:`~.bundle_file` (``state.tgz``), :mod:`~.slots`,
:mod:`~.recoverykey`, :mod:`~.requirements`, :mod:`~.diagnose` and :mod:`~.errors`. In
them the TPM slot is a record; :mod:`hostseal.tpm` seals and unseals its contents.

:mod:`~.adopted` (how the paths adopted in place are held in the archive, and which paths
may be adopted) is pure too.

The edges touch the host: :mod:`~.archive` packs directory trees into the configuration
archive and unpacks it onto disk, :mod:`~.store` keeps the bootbank's generations on disk,
:mod:`~.bootunit` writes the systemd units, and the recipes of :mod:`~.manager` (with their
machinery in :mod:`~._generation`) drive the TPM, read the event log and write the bootbank.
The recipes of :mod:`~.inplace` (adopt, release, the boot-time mount, auto-backup; their disk,
tmpfs and mount work in :mod:`~._inplace_fs`) protect chosen paths in place.
This package exports the pure pieces, the archive and :mod:`hostseal.fsutil`'s atomic
writes; the recipes are imported from :mod:`hostseal.secureconfig.manager`. The format is
described in ``docs/secure-config-format.md``.
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
    NotABackup,
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
    "NotABackup",
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
