"""Errors of the sealed configuration bundle.

One subclass per failure a caller can act on; every message says what happened, every remedy says
what to do. None of them ever carries a whole recovery key or a data key.
"""

from __future__ import annotations

from hostseal.errors import HostsealError

RECOVERY_KEY_GROUPS = 16
RECOVERY_KEY_GROUP_DIGITS = 6


class SecureConfigError(HostsealError):
    """Base of the errors raised by :mod:`hostseal.secureconfig`."""


class BundleCorrupt(SecureConfigError):
    """``state.tgz``, ``encryption.info`` or ``local.tgz.ve`` is damaged or not in our format."""

    def __init__(
        self,
        message: str,
        remedy: str = "Restore the host configuration from a backup taken on this host.",
    ) -> None:
        super().__init__(message, remedy)


class NotABackup(SecureConfigError):
    """A file given as a configuration backup is not one (not ``hostseal config backup``'s)."""


class BundleMismatch(BundleCorrupt):
    """``encryption.info`` and ``local.tgz.ve`` disagree (different saves, or an edited info)."""


class PayloadAuthenticationFailed(SecureConfigError):
    """AES-GCM refused ``local.tgz.ve``: the file was changed or the key is not its key."""


class UnsafeArchive(SecureConfigError):
    """A configuration archive holds a member that could write outside its destination."""


class PackRefused(SecureConfigError):
    """A source tree holds something that cannot go into a configuration archive."""


class UnpackRefused(SecureConfigError):
    """The destination of an unpack is unsuitable (not a directory, not empty)."""


class RecoveryKeyError(SecureConfigError):
    """A recovery key or recovery ID as typed by an operator is not valid."""


class RecoveryKeyMalformed(RecoveryKeyError):
    """The recovery key does not have 16 groups of 6 digits."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            f"A recovery key is {RECOVERY_KEY_GROUPS} groups of {RECOVERY_KEY_GROUP_DIGITS} "
            "digits separated by dashes, as the recovery key list shows it; copy all of it.",
        )


class RecoveryKeyTypo(RecoveryKeyError):
    """One group of the recovery key fails its check (divisible by 11, below 65536 x 11)."""

    def __init__(self, group: int, text: str) -> None:
        super().__init__(
            f"Recovery key group {group} ({text!r}) is not valid: check it for a typo. "
            f"Each group is {RECOVERY_KEY_GROUP_DIGITS} digits and divisible by 11.",
            "Compare that group with the saved copy of the recovery key.",
        )
        self.group = group
        self.text = text


class RecoveryIdMalformed(RecoveryKeyError):
    """The recovery ID is not a GUID."""


class NoRecoverySlotMatches(SecureConfigError):
    """A well-formed recovery key opens none of the configuration's recovery slots."""
