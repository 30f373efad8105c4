"""Errors of the key providers: each says what happened to a key and what to do."""

from __future__ import annotations

from hostseal.errors import HostsealError


class KeyProviderError(HostsealError):
    """A key provider could not be configured, reached or used."""


class KeyProviderNotFound(KeyProviderError):
    """No key provider of that name is configured (or none at all)."""


class KeyProviderNotBackedUp(KeyProviderError):
    """The native key provider issues no key before its key-encryption key is backed up."""


class WrongBackupPassword(KeyProviderError):
    """The password does not open a native key provider backup."""


class BackupDamaged(KeyProviderError):
    """A backup file is not a backup hostseal wrote, or it was changed since."""


class KeyNotFound(KeyProviderError):
    """The provider has no key with that id (destroyed, or another provider's)."""


class KmipUnavailable(KeyProviderError):
    """The KMIP server could not be reached, or refused the TLS connection."""


class KeyReleaseRefused(KeyProviderError):
    """Keys are released only to hosts whose last attestation passed; this one's did not."""
