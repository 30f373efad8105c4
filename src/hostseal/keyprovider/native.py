"""The native key provider: built in, no external key server.

Its directory (mode 0700) holds:

* ``provider.json`` -- its name and id (a UUID; a restored backup keeps the id);
* ``kek``           -- the key-encryption key (KEK), 32 random bytes, mode 0600 (root only when
  hostseal runs as root);
* ``keys/<id>.json`` -- each data key: 32 random bytes wrapped by the KEK with AES-256-GCM (the
  provider id and key id are authenticated with it);
* ``backup.json``   -- the record that the KEK was backed up (when, where, SHA-256 of the file).

As vSphere's native key provider, it **issues no key until its KEK is backed up** to a
password-protected file (:meth:`NativeProvider.write_backup`): scrypt (N=2^17, r=8, p=1) derives
an AES-256-GCM key from the password. A key record carries the data key wrapped by the KEK, so a
vTPM backup can be restored wherever the provider's backup was restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path

from hostseal.fsutil import atomic_write
from hostseal.keyprovider import _crypto
from hostseal.keyprovider.base import (
    DATA_KEY_BYTES,
    DataKey,
    check_name,
    check_record_kcv,
    record_key_id,
)
from hostseal.keyprovider.errors import (
    BackupDamaged,
    KeyNotFound,
    KeyProviderError,
    KeyProviderNotBackedUp,
    WrongBackupPassword,
)

KIND = "native"
BACKUP_FORMAT = "hostseal-native-key-provider-backup"
BACKUP_VERSION = 1
_KEY_ID = re.compile(r"[0-9a-f]{32}")  # fullmatch: no trailing newline


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _wrap_aad(provider_id: str, key_id: str) -> bytes:
    return f"hostseal native data key v1|{provider_id}|{key_id}".encode()


def _backup_aad(provider_id: str) -> bytes:
    return f"{BACKUP_FORMAT}|{BACKUP_VERSION}|{provider_id}".encode()


class NativeProvider:
    """A native key provider living in ``path``."""

    kind = KIND

    def __init__(self, name: str, path: Path) -> None:
        self._name = name
        self.path = path
        try:
            info = json.loads((path / "provider.json").read_text())
            self.provider_id = str(info["id"])
        except (OSError, ValueError, KeyError) as err:
            raise KeyProviderError(
                f"The native key provider {name!r} at {path} is unreadable ({err}).",
                "Run hostseal as root, or restore the provider from its backup: "
                f"hostseal keyprovider add {name} --type native --from-backup FILE",
            ) from None

    @property
    def name(self) -> str:
        return self._name

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: Path, name: str, kek: bytes | None = None, provider_id: str = ""
    ) -> NativeProvider:
        """A new provider with a fresh KEK (or the given one, when restoring a backup)."""
        check_name(name)
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)
        (path / "keys").mkdir(mode=0o700)
        atomic_write(path / "kek", kek or secrets.token_bytes(DATA_KEY_BYTES), mode=0o600)
        record = {"name": name, "id": provider_id or str(uuid.uuid4()), "created": _now()}
        atomic_write(path / "provider.json", json.dumps(record, indent=2).encode(), mode=0o600)
        return cls(name, path)

    @classmethod
    def restore(cls, path: Path, name: str, backup: bytes, password: bytes) -> NativeProvider:
        """A provider with the KEK of a backup (same id, so its keys' records open again)."""
        provider_id, kek = open_backup(backup, password)
        provider = cls.create(path, name, kek=kek, provider_id=provider_id)
        provider._mark_backed_up(hashlib.sha256(backup).hexdigest(), "(restored from it)")
        return provider

    # -- KEK and backup ------------------------------------------------------------------
    def _kek(self) -> bytes:
        try:
            kek = (self.path / "kek").read_bytes()
        except PermissionError:
            raise KeyProviderError(
                f"No permission to read the key-encryption key of key provider {self.name!r}.",
                "Run hostseal as root.",
            ) from None
        except OSError as err:
            raise KeyProviderError(
                f"The key-encryption key of key provider {self.name!r} is missing ({err}).",
                "Restore the provider from its backup: hostseal keyprovider remove "
                f"{self.name} --yes, then hostseal keyprovider add {self.name} --type native "
                "--from-backup FILE",
            ) from None
        if len(kek) != DATA_KEY_BYTES:
            raise KeyProviderError(
                f"The key-encryption key of key provider {self.name!r} is damaged.",
                "Restore the provider from its backup.",
            )
        return kek

    @property
    def backed_up(self) -> bool:
        return (self.path / "backup.json").is_file()

    def backup_info(self) -> dict[str, object] | None:
        try:
            info: dict[str, object] = json.loads((self.path / "backup.json").read_text())
        except (OSError, ValueError):
            return None
        return info

    def _require_backup(self) -> None:
        if not self.backed_up:
            raise KeyProviderNotBackedUp(
                f"The native key provider {self.name!r} has not been backed up, so it issues "
                "no keys: without a backup, losing this host would lose every vTPM it "
                "encrypts.",
                f"Back it up first: hostseal keyprovider backup {self.name} --out FILE "
                "(keep FILE and its password away from this host), then try again.",
            )

    def backup_bytes(self, password: bytes) -> bytes:
        """The KEK, encrypted under ``password``, as a backup file's content."""
        if len(password) < _crypto.MIN_PASSWORD_LENGTH:
            raise KeyProviderError(
                f"The backup password is too short ({len(password)} characters).",
                f"Use at least {_crypto.MIN_PASSWORD_LENGTH} characters; a passphrase of "
                "several words is best.",
            )
        salt = os.urandom(16)
        n, r, p = _crypto.SCRYPT_N, _crypto.SCRYPT_R, _crypto.SCRYPT_P
        wrapping = _crypto.password_key(password, salt, n, r, p)
        nonce, ciphertext = _crypto.seal(wrapping, self._kek(), _backup_aad(self.provider_id))
        document = {
            "format": BACKUP_FORMAT,
            "version": BACKUP_VERSION,
            "provider_id": self.provider_id,
            "name": self.name,
            "created": _now(),
            "kdf": {"name": "scrypt", "salt": _crypto.b64(salt), "n": n, "r": r, "p": p},
            "cipher": "AES-256-GCM",
            "nonce": _crypto.b64(nonce),
            "ciphertext": _crypto.b64(ciphertext),
        }
        return json.dumps(document, indent=2).encode() + b"\n"

    def write_backup(self, out: Path, password: bytes) -> None:
        """Write the password-protected backup to ``out`` (mode 0600); from then on the
        provider issues keys."""
        data = self.backup_bytes(password)
        atomic_write(out, data, mode=0o600)
        self._mark_backed_up(hashlib.sha256(data).hexdigest(), str(out.resolve()))

    def _mark_backed_up(self, digest: str, where: str) -> None:
        record = {"created": _now(), "sha256": digest, "file": where}
        atomic_write(self.path / "backup.json", json.dumps(record, indent=2).encode(), 0o600)

    # -- data keys -----------------------------------------------------------------------
    def _key_path(self, key_id: str) -> Path:
        if not _KEY_ID.fullmatch(key_id):
            raise KeyNotFound(
                f"{key_id!r} is not a key id of the native key provider {self.name!r}.",
                "Check the vTPM record: native key ids are 32 hexadecimal digits.",
            )
        return self.path / "keys" / f"{key_id}.json"

    def _unwrap(self, key_id: str, nonce: bytes, ciphertext: bytes) -> DataKey:
        material = _crypto.open_sealed(
            self._kek(), nonce, ciphertext, _wrap_aad(self.provider_id, key_id)
        )
        if material is None:
            raise KeyProviderError(
                f"Key {key_id} does not open with the key-encryption key of provider "
                f"{self.name!r}: it was wrapped by another provider, or it was changed.",
                "Restore the key provider that made it from its backup.",
            )
        return DataKey(key_id, material)

    def create_key(self, label: str) -> DataKey:
        self._require_backup()
        key = DataKey(uuid.uuid4().hex, secrets.token_bytes(DATA_KEY_BYTES))
        nonce, ciphertext = _crypto.seal(
            self._kek(), key.material, _wrap_aad(self.provider_id, key.key_id)
        )
        record = {
            "key_id": key.key_id,
            "label": label,
            "created": _now(),
            "wrap": "AES-256-GCM",
            "nonce": _crypto.b64(nonce),
            "ciphertext": _crypto.b64(ciphertext),
        }
        atomic_write(self._key_path(key.key_id), json.dumps(record).encode(), mode=0o600)
        return key

    def get_key(self, key_id: str) -> DataKey:
        self._require_backup()
        path = self._key_path(key_id)
        try:
            record = json.loads(path.read_text())
            nonce, ciphertext = _crypto.unb64(record["nonce"]), _crypto.unb64(record["ciphertext"])
        except FileNotFoundError:
            raise KeyNotFound(
                f"The native key provider {self.name!r} has no key {key_id}.",
                "The key was destroyed, or it belongs to another provider: restore the vTPM "
                "from a backup (it carries the wrapped key).",
            ) from None
        except (OSError, ValueError, KeyError) as err:
            raise KeyProviderError(
                f"The stored key {key_id} of provider {self.name!r} is unreadable ({err}).",
                "Run hostseal as root, or restore the vTPM from a backup.",
            ) from None
        return self._unwrap(key_id, nonce, ciphertext)

    def key_record(self, key: DataKey) -> dict[str, object]:
        record = json.loads(self._key_path(key.key_id).read_text())
        return {
            "provider": self.name,
            "kind": KIND,
            "provider_id": self.provider_id,
            "key_id": key.key_id,
            "kcv": key.check_value,
            "wrapped": {"nonce": record["nonce"], "ciphertext": record["ciphertext"]},
        }

    def key_for_record(self, record: dict[str, object]) -> DataKey:
        """The key of ``record``, from this provider's store or the record's wrapped copy;
        writes nothing (the check before a restore)."""
        key_id = record_key_id(record)
        if self._key_path(key_id).is_file():
            key = self.get_key(key_id)
        else:
            if record.get("provider_id") != self.provider_id:
                raise KeyProviderError(
                    f"Key {key_id} was made by another native key provider (id "
                    f"{record.get('provider_id')}), not by {self.name!r} (id "
                    f"{self.provider_id}).",
                    "Restore that provider from its backup first: hostseal keyprovider add "
                    "NAME --type native --from-backup FILE, then restore with --key-provider "
                    "NAME.",
                )
            self._require_backup()
            nonce, ciphertext = _wrapped_parts(self.name, record, key_id)
            key = self._unwrap(key_id, nonce, ciphertext)
        check_record_kcv(record, key)
        return key

    def adopt_key(self, record: dict[str, object]) -> DataKey:
        key = self.key_for_record(record)
        path = self._key_path(key.key_id)
        if not path.is_file():
            wrapped = record["wrapped"]
            if not isinstance(wrapped, dict):  # key_for_record checked it; for the type checker
                raise BackupDamaged("The record's wrapped key is damaged.", "Use another backup.")
            stored = {
                "key_id": key.key_id,
                "label": "adopted from a key record",
                "created": _now(),
                "wrap": "AES-256-GCM",
                "nonce": wrapped["nonce"],
                "ciphertext": wrapped["ciphertext"],
            }
            atomic_write(path, json.dumps(stored).encode(), mode=0o600)
        return key

    def destroy_key(self, key_id: str) -> None:
        self._key_path(key_id).unlink(missing_ok=True)

    def describe(self) -> dict[str, object]:
        info = self.backup_info()
        return {
            "name": self.name,
            "kind": KIND,
            "id": self.provider_id,
            "backed_up": info is not None,
            "backup": info,
            "keys": len(list((self.path / "keys").glob("*.json"))),
        }


def _wrapped_parts(name: str, record: dict[str, object], key_id: str) -> tuple[bytes, bytes]:
    wrapped = record.get("wrapped")
    try:
        if not isinstance(wrapped, dict):
            raise ValueError("no wrapped key")
        return _crypto.unb64(wrapped["nonce"]), _crypto.unb64(wrapped["ciphertext"])
    except (KeyError, ValueError):
        raise BackupDamaged(
            f"Provider {name!r} has no key {key_id} and the record's wrapped copy of it is "
            "missing or damaged.",
            "Restore from another backup made by hostseal vtpm backup.",
        ) from None


def open_backup(data: bytes, password: bytes) -> tuple[str, bytes]:
    """(provider id, KEK) from a backup file's content; :class:`WrongBackupPassword` when the
    password does not open it, :class:`BackupDamaged` when it is not a backup."""
    try:
        doc = json.loads(data)
        if doc.get("format") != BACKUP_FORMAT:
            raise ValueError("not a native key provider backup")
        if doc.get("version") != BACKUP_VERSION:
            raise ValueError(f"backup format version {doc.get('version')} is not supported")
        kdf = doc["kdf"]
        if kdf.get("name") != "scrypt":
            raise ValueError(f"unknown KDF {kdf.get('name')!r}")
        provider_id = str(doc["provider_id"])
        salt, nonce = _crypto.unb64(kdf["salt"]), _crypto.unb64(doc["nonce"])
        ciphertext = _crypto.unb64(doc["ciphertext"])
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BackupDamaged(
            f"This file is not a hostseal native key provider backup, or it is damaged ({err}).",
            "Use the file written by hostseal keyprovider backup.",
        ) from None
    wrapping = _crypto.password_key(password, salt, n, r, p)
    kek = _crypto.open_sealed(wrapping, nonce, ciphertext, _backup_aad(provider_id))
    if kek is None or len(kek) != DATA_KEY_BYTES:
        raise WrongBackupPassword(
            "The password does not open this key provider backup (or the file was changed).",
            "Type the password given when the backup was made (passwords are case-sensitive); "
            "if it is lost, this backup cannot be used.",
        )
    return provider_id, kek
