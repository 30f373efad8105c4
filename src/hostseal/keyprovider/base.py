"""What every key provider offers: 256-bit data keys, created and fetched by id.

A *data key* is what encrypts a vTPM's state. The provider that made it can give it again from
its id (and, for the native provider, from the wrapped copy kept in a key record); nothing in
clear is ever written to disk. A *key record* is the portable reference stored with a vTPM and
in its backups: provider name and kind, key id, a key check value, and for the native provider
the key wrapped under its key-encryption key -- never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Protocol

from hostseal.keyprovider.errors import KeyProviderError

DATA_KEY_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: no trailing newline
_KCV_LABEL = b"hostseal data key check v1"


@dataclass(frozen=True)
class DataKey:
    """A 256-bit data key and its id at the provider. ``repr`` never shows the key."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != DATA_KEY_BYTES:
            raise KeyProviderError(
                f"Key {self.key_id} is {len(self.material)} bytes, not {DATA_KEY_BYTES}.",
                "The key provider returned a key that is not AES-256: check its configuration.",
            )

    @property
    def check_value(self) -> str:
        """A key check value: proves which key it is without revealing it (hex, 16 bytes)."""
        return key_check_value(self.material)


def key_check_value(material: bytes) -> str:
    return hmac.new(material, _KCV_LABEL, hashlib.sha256).hexdigest()[:32]


def check_name(name: str, what: str = "key provider") -> None:
    if not _NAME.fullmatch(name):
        raise KeyProviderError(
            f"{name!r} is not a valid {what} name.",
            "Use letters, digits, '.', '_' or '-' (at most 63 characters, not starting with a "
            "punctuation mark).",
        )


class KeyProvider(Protocol):
    """A source of data keys. Implementations: native (built in) and KMIP."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def create_key(self, label: str) -> DataKey:
        """A new random 256-bit key, stored by the provider under a new id."""
        ...

    def get_key(self, key_id: str) -> DataKey:
        """The key with this id; :class:`KeyNotFound` if the provider has none."""
        ...

    def key_record(self, key: DataKey) -> dict[str, object]:
        """The portable reference to ``key`` (no key material in clear)."""
        ...

    def key_for_record(self, record: dict[str, object]) -> DataKey:
        """The key ``record`` refers to; raise when it cannot be obtained. Writes nothing:
        this is the check a restore makes before it writes anything."""
        ...

    def adopt_key(self, record: dict[str, object]) -> DataKey:
        """Like :meth:`key_for_record`, then make the key obtainable by id from now on (the
        native provider stores the record's wrapped copy)."""
        ...

    def destroy_key(self, key_id: str) -> None:
        """Destroy the key: whatever it encrypted can no longer be decrypted."""
        ...

    def describe(self) -> dict[str, object]:
        """Configuration facts for ``keyprovider list`` (no secrets)."""
        ...


def record_key_id(record: dict[str, object]) -> str:
    key_id = record.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise KeyProviderError(
            "The key record has no key id.",
            "The vTPM record or backup is damaged; restore it from another backup.",
        )
    return key_id


def check_record_kcv(record: dict[str, object], key: DataKey) -> None:
    """The key matches the key check value in ``record`` (when the record has one)."""
    expected = record.get("kcv")
    if isinstance(expected, str) and not hmac.compare_digest(expected, key.check_value):
        raise KeyProviderError(
            f"Key {key.key_id} from provider {record.get('provider')!r} is not the key this "
            "record was made with (the key check values differ).",
            "The provider holds a different key under that id: check that the right key "
            "provider (or its restored backup) is configured.",
        )
