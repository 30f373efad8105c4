"""Key providers: where the data keys that encrypt vTPM state come from.

* native -- built in: a key-encryption key in a root-only file wraps random data keys; it issues
  no key until its key-encryption key is backed up to a password-protected file;
* KMIP   -- an external key management server, over mutual TLS.

>>> store = ProviderStore(Path("/var/lib/hostseal/vtpm/keyproviders"))   # doctest: +SKIP
>>> key = store.open().create_key("vtpm:vm1")                              # doctest: +SKIP

With an attestation service, :class:`AttestationGate` makes every provider release keys only to
hosts whose last attestation passed (:mod:`hostseal.keyprovider.release`).
"""

from hostseal.keyprovider.base import DataKey, KeyProvider, key_check_value
from hostseal.keyprovider.errors import (
    BackupDamaged,
    KeyNotFound,
    KeyProviderError,
    KeyProviderNotBackedUp,
    KeyProviderNotFound,
    KeyReleaseRefused,
    KmipUnavailable,
    WrongBackupPassword,
)
from hostseal.keyprovider.kmip import KmipProvider
from hostseal.keyprovider.native import NativeProvider
from hostseal.keyprovider.release import (
    AttestationGate,
    GatedProvider,
    HttpVerdictSource,
    StaticVerdictSource,
    Verdict,
    VerdictSource,
)
from hostseal.keyprovider.store import ProviderStore, default_keyprovider_dir

__all__ = [
    "AttestationGate",
    "BackupDamaged",
    "DataKey",
    "GatedProvider",
    "HttpVerdictSource",
    "KeyNotFound",
    "KeyProvider",
    "KeyProviderError",
    "KeyProviderNotBackedUp",
    "KeyProviderNotFound",
    "KeyReleaseRefused",
    "KmipProvider",
    "KmipUnavailable",
    "NativeProvider",
    "ProviderStore",
    "StaticVerdictSource",
    "Verdict",
    "VerdictSource",
    "WrongBackupPassword",
    "default_keyprovider_dir",
    "key_check_value",
]
