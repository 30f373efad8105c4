"""Rotation means rotation (issue 12, item 3): a new data key for every generation.

The attack: keep an old copy of the bundle (a backup, a leftover ``.previous``) and a recovery
key that was later rotated out. The old key opens the old copy's slot and yields that copy's data
key; that key must open nothing saved afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostseal.secureconfig import (
    PayloadAuthenticationFailed,
    decrypt_payload,
    open_recovery_slots,
    parse_recovery_key,
)
from hostseal.secureconfig.bundle_file import RECOVERY_KEYS_MEMBER
from hostseal.secureconfig.errors import NoRecoverySlotMatches
from hostseal.secureconfig.store import Bundle, Store

from .conftest import Env
from .test_sealed_config import same_tree

pytestmark = pytest.mark.swtpm


def _data_key(bundle: Bundle, key_text: str) -> bytes:
    """The data key that the recovery key ``key_text`` opens in ``bundle``."""
    data_key, _ = open_recovery_slots(bundle.info.recovery_slots, parse_recovery_key(key_text))
    return data_key


def _opens_nothing(data_key: bytes, bundle: Bundle) -> None:
    with pytest.raises(PayloadAuthenticationFailed):
        decrypt_payload(data_key, bundle.payload)
    with pytest.raises(PayloadAuthenticationFailed):
        decrypt_payload(data_key, bundle.extras[RECOVERY_KEYS_MEMBER])


def _current(env: Env) -> Bundle:
    return Store(env.bootbank).load()


def test_rotated_out_key_and_old_backup_open_no_later_save(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, old_key = env.recovery_key()
    backup = env.bootbank.parent / "before-rotation.backup"
    env.ok("config", "backup", "--out", str(backup))
    old_bundle = Bundle.parse(backup.read_bytes())
    old_data_key = _data_key(old_bundle, old_key)
    decrypt_payload(old_data_key, old_bundle.payload)  # the attacker really holds this much

    env.ok("recovery", "rotate")
    (env.config / "ssh" / "new-after-rotation").write_text("SECRET WRITTEN AFTER ROTATION\n")
    env.ok("config", "save", "--from", str(env.config))

    new_bundle = _current(env)
    with pytest.raises(NoRecoverySlotMatches):
        _data_key(new_bundle, old_key)
    _opens_nothing(old_data_key, new_bundle)


def test_every_save_has_a_new_data_key(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()  # a reveal: whoever saw it may have taken the data key
    first = _data_key(_current(env), key)
    env.ok("config", "save", "--from", str(env.config))
    second_bundle = _current(env)
    second = _data_key(second_bundle, key)  # the key itself is still current: it opens
    assert second != first
    _opens_nothing(first, second_bundle)


def test_config_rekey(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    before = _current(env)
    old_data_key = _data_key(before, key)
    done = env.ok("config", "rekey")
    generation = before.info.generation + 1
    assert f"New data key for generation {generation}." in done.out
    assert "Re-wrapped: the TPM slot (PCRs 7, sha256), 1 recovery slot" in done.out
    assert "Copies saved before (backups) open only with the keys they held" in done.out
    after = _current(env)
    assert after.info.generation == generation
    _opens_nothing(old_data_key, after)
    new_data_key = _data_key(after, key)  # the recovery slot was re-wrapped
    decrypt_payload(new_data_key, after.payload)
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))  # and the TPM slot too
    assert same_tree(env.config, target / env.config.name)
    audit = [r for r in Store(env.bootbank).audit_records() if r["action"] == "config.rekey"]
    assert audit and audit[-1]["generation"] == generation


def test_rekey_in_mode_none(env: Env) -> None:
    env.monkeypatch.setenv("HOSTSEAL_TCTI", "swtpm:host=127.0.0.1,port=1")  # no TPM here
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    old_data_key = _data_key(_current(env), key)
    done = env.ok("config", "rekey")
    assert "Re-wrapped: the NONE-mode slot (obfuscation, not encryption), 1 recovery slot" in (
        done.out
    )
    after = _current(env)
    assert after.info.none_slot is not None
    assert after.info.none_slot.open() == _data_key(after, key) != old_data_key
    _opens_nothing(old_data_key, after)


def test_restore_of_old_backup_keeps_current_recovery_keys(env: Env, tmp_path: Path) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, old_key = env.recovery_key()
    backup = env.bootbank.parent / "old.backup"
    env.ok("config", "backup", "--out", str(backup))
    old_bundle = Bundle.parse(backup.read_bytes())
    old_data_key = _data_key(old_bundle, old_key)
    env.ok("recovery", "rotate")
    _, new_key = env.recovery_key()
    env.ok("config", "restore", str(backup))
    restored = _current(env)
    # The backup's content is back, but not its rotated-out key, nor its data key.
    with pytest.raises(NoRecoverySlotMatches):
        _data_key(restored, old_key)
    _opens_nothing(old_data_key, restored)
    decrypt_payload(_data_key(restored, new_key), restored.payload)
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    assert same_tree(env.config, target / env.config.name)
