"""The native key provider: no key before a backup; password-protected backups; restores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostseal import vtpm
from hostseal.keyprovider import (
    BackupDamaged,
    KeyNotFound,
    KeyProviderError,
    KeyProviderNotBackedUp,
    KeyProviderNotFound,
    NativeProvider,
    ProviderStore,
    WrongBackupPassword,
    _crypto,
)
from hostseal.vtpm import VtpmDirs

from .conftest import PASSWORD


def test_no_key_before_a_backup(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    provider = store.add_native("nkp")
    with pytest.raises(KeyProviderNotBackedUp) as err:
        provider.create_key("vtpm:vm1")
    assert "has not been backed up, so it issues no keys" in err.value.message
    assert "hostseal keyprovider backup nkp --out FILE" in err.value.remedy
    provider.write_backup(tmp_path / "nkp.backup", PASSWORD)
    key = provider.create_key("vtpm:vm1")
    assert len(key.material) == 32
    assert provider.get_key(key.key_id) == key
    assert "material" not in repr(key) and key.material.hex() not in repr(key)


def test_vtpm_create_refused_before_backup(tmp_path: Path) -> None:
    dirs = VtpmDirs(tmp_path / "v", tmp_path / "v" / "keyproviders")
    store = ProviderStore(dirs.keyproviders)
    store.add_native("nkp")
    with pytest.raises(KeyProviderNotBackedUp, match="issues no keys"):
        vtpm.create(dirs, store, "vm1")
    assert not dirs.vm("vm1").exists()


def test_files_are_root_only_and_hold_no_key_in_clear(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    provider = store.add_native("nkp")
    provider.write_backup(tmp_path / "b", PASSWORD)
    key = provider.create_key("x")
    for path in [provider.path, *provider.path.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, (path, oct(mode))
        if path.is_file():
            assert key.material not in path.read_bytes()
    assert oct((tmp_path / "b").stat().st_mode & 0o777) == "0o600"
    kek = (provider.path / "kek").read_bytes()
    assert kek not in (tmp_path / "b").read_bytes()


def test_wrong_backup_password(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    provider = store.add_native("nkp")
    provider.write_backup(tmp_path / "b", PASSWORD)
    with pytest.raises(WrongBackupPassword) as err:
        store.add_native_from_backup("again", (tmp_path / "b").read_bytes(), b"wrong password")
    assert err.value.message == (
        "The password does not open this key provider backup (or the file was changed)."
    )
    assert "passwords are case-sensitive" in err.value.remedy
    assert "again" not in [p["name"] for p in store.list()]
    with pytest.raises(BackupDamaged, match="not a hostseal native key provider backup"):
        store.add_native_from_backup("again", b"{}", PASSWORD)
    with pytest.raises(KeyProviderError, match="too short"):
        provider.write_backup(tmp_path / "c", b"short")


def test_restored_provider_opens_old_keys(tmp_path: Path) -> None:
    """A host lost: the provider restored from its backup opens the records of its keys."""
    old = ProviderStore(tmp_path / "old").add_native("nkp")
    old.write_backup(tmp_path / "b", PASSWORD)
    key = old.create_key("vtpm:vm1")
    record = old.key_record(key)
    assert key.material not in json.dumps(record).encode()

    new_store = ProviderStore(tmp_path / "new")
    new = new_store.add_native_from_backup("nkp", (tmp_path / "b").read_bytes(), PASSWORD)
    assert new.provider_id == old.provider_id and new.backed_up
    with pytest.raises(KeyNotFound):
        new.get_key(key.key_id)
    assert new.key_for_record(record) == key
    assert not (new.path / "keys" / f"{key.key_id}.json").exists()  # checking wrote nothing
    assert new.adopt_key(record) == key
    assert new.get_key(key.key_id) == key

    # another native provider cannot open it
    other = ProviderStore(tmp_path / "other").add_native("nkp")
    other.write_backup(tmp_path / "o", PASSWORD)
    with pytest.raises(KeyProviderError, match="made by another native key provider"):
        other.key_for_record(record)


def test_backup_uses_scrypt_with_stored_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_crypto, "SCRYPT_N", 2**15)
    provider = ProviderStore(tmp_path / "kp").add_native("nkp")
    provider.write_backup(tmp_path / "b", PASSWORD)
    doc = json.loads((tmp_path / "b").read_bytes())
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] == 2**15
    assert doc["cipher"] == "AES-256-GCM"
    monkeypatch.setattr(_crypto, "SCRYPT_N", 2**14)  # another default later: still opens
    ProviderStore(tmp_path / "kp2").add_native_from_backup(
        "x", (tmp_path / "b").read_bytes(), PASSWORD
    )


def test_store_errors(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    with pytest.raises(KeyProviderNotFound) as none:
        store.open()
    assert "hostseal keyprovider add NAME --type native" in none.value.remedy
    store.add_native("a")
    store.add_native("b")
    assert store.default_name() == "a"
    with pytest.raises(KeyProviderNotFound, match="no key provider named 'c'"):
        store.open("c")
    with pytest.raises(KeyProviderError, match="already exists"):
        store.add_native("a")
    store.set_default("b")
    store.remove("b")
    assert store.default_name() == "a"
    assert not (tmp_path / "kp" / "native" / "b").exists()
    assert isinstance(store.open(), NativeProvider)


def test_unreadable_kek_says_run_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = ProviderStore(tmp_path / "kp").add_native("nkp")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "kek":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(
        KeyProviderError, match="No permission to read the key-encryption key"
    ) as err:
        provider.backup_bytes(PASSWORD)
    assert err.value.remedy == "Run hostseal as root."
    monkeypatch.setattr(Path, "read_bytes", real)
    (provider.path / "kek").unlink()
    with pytest.raises(
        KeyProviderError, match="key-encryption key of key provider 'nkp' is missing"
    ):
        provider.backup_bytes(PASSWORD)
