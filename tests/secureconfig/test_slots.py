"""Key slots: recovery slots open with their key only; NONE mode is obfuscation."""

from __future__ import annotations

import dataclasses
from uuid import uuid4

import pytest

from hostseal.secureconfig import (
    BundleCorrupt,
    NoneModeSlot,
    NoRecoverySlotMatches,
    RecoveryKey,
    RecoverySlot,
    TpmSlot,
    generate_data_key,
    open_recovery_slots,
)
from hostseal.secureconfig import slots as slots_module


def test_recovery_slot_opens_with_its_key(data_key: bytes, recovery_key: RecoveryKey) -> None:
    slot = RecoverySlot.create(data_key, recovery_key)
    assert slot.recovery_id == recovery_key.recovery_id
    assert data_key not in slot.wrapped_key
    key, found = open_recovery_slots([slot], recovery_key.secret)
    assert key == data_key
    assert found is slot


def test_wrong_key_matches_no_slot(data_key: bytes, recovery_key: RecoveryKey) -> None:
    slot = RecoverySlot.create(data_key, recovery_key)
    with pytest.raises(NoRecoverySlotMatches) as err:
        open_recovery_slots([slot], RecoveryKey.generate().secret)
    assert err.value.message == (
        "The recovery key is well-formed but matches no recovery slot of this configuration: "
        f"it is not one of its 1 recovery key ({recovery_key.formatted_id})."
    )
    assert "rotation" in err.value.remedy


def test_several_slots(data_key: bytes) -> None:
    keys = [RecoveryKey.generate() for _ in range(3)]
    slots = [RecoverySlot.create(data_key, k) for k in keys]
    for key in keys:
        opened, slot = open_recovery_slots(slots, key.secret)
        assert opened == data_key
        assert slot.recovery_id == key.recovery_id
    with pytest.raises(NoRecoverySlotMatches) as err:
        open_recovery_slots(slots, RecoveryKey.generate().secret)
    assert "its 3 recovery keys (" in err.value.message
    for key in keys:
        assert key.formatted_id in err.value.message
        assert key.formatted_key not in str(err.value)


def test_no_slots_at_all() -> None:
    with pytest.raises(NoRecoverySlotMatches) as err:
        open_recovery_slots([], RecoveryKey.generate().secret)
    assert err.value.message == (
        "This configuration has no recovery slot, so no recovery key can unlock it."
    )


def test_every_slot_is_tried(
    data_key: bytes, recovery_key: RecoveryKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = [RecoverySlot.create(data_key, recovery_key)]
    slots += [RecoverySlot.create(data_key, RecoveryKey.generate()) for _ in range(4)]
    calls: list[RecoverySlot] = []
    original = RecoverySlot.try_open

    def counting(self: RecoverySlot, secret: bytes) -> bytes | None:
        calls.append(self)
        return original(self, secret)

    monkeypatch.setattr(RecoverySlot, "try_open", counting)
    open_recovery_slots(slots, recovery_key.secret)  # matches the first slot
    assert calls == slots


def test_slot_metadata_is_bound(data_key: bytes, recovery_key: RecoveryKey) -> None:
    slot = RecoverySlot.create(data_key, recovery_key)
    assert slot.try_open(recovery_key.secret) == data_key
    assert dataclasses.replace(slot, recovery_id=uuid4()).try_open(recovery_key.secret) is None
    flipped = bytes([slot.wrapped_key[0] ^ 1]) + slot.wrapped_key[1:]
    assert dataclasses.replace(slot, wrapped_key=flipped).try_open(recovery_key.secret) is None
    other_nonce = bytes(12)
    assert dataclasses.replace(slot, nonce=other_nonce).try_open(recovery_key.secret) is None


def test_slot_field_lengths_checked(data_key: bytes, recovery_key: RecoveryKey) -> None:
    slot = RecoverySlot.create(data_key, recovery_key)
    with pytest.raises(ValueError, match="salt must be 32 bytes"):
        dataclasses.replace(slot, salt=b"x")
    with pytest.raises(ValueError, match="data key must be 32 bytes"):
        RecoverySlot.create(b"short", recovery_key)


def test_slots_are_fresh(data_key: bytes, recovery_key: RecoveryKey) -> None:
    a = RecoverySlot.create(data_key, recovery_key)
    b = RecoverySlot.create(data_key, recovery_key)
    assert a.salt != b.salt
    assert a.wrapped_key != b.wrapped_key
    assert generate_data_key() != generate_data_key()


def test_none_mode_round_trip(data_key: bytes) -> None:
    slot = NoneModeSlot.create(data_key)
    assert slot.iterations == 100_000
    assert slot.open() == data_key
    assert data_key not in slot.wrapped_key


def test_none_mode_says_obfuscation() -> None:
    assert NoneModeSlot.PROTECTION == "obfuscation, not encryption"
    assert NoneModeSlot.IS_ENCRYPTION is False
    assert NoneModeSlot.create(generate_data_key(), iterations=1).protection == (
        "obfuscation, not encryption"
    )
    doc = NoneModeSlot.__doc__ or ""
    assert "**obfuscation, not encryption**" in doc
    assert "100,000 rounds" in doc
    assert "same file" in doc


def test_none_mode_tampering_detected(data_key: bytes) -> None:
    slot = NoneModeSlot.create(data_key, iterations=1000)
    with pytest.raises(BundleCorrupt) as err:
        dataclasses.replace(slot, iterations=1001).open()
    assert err.value.message == (
        "The NONE-mode key slot of encryption.info does not open: the file was damaged or edited."
    )
    with pytest.raises(BundleCorrupt):
        dataclasses.replace(slot, passphrase=bytes(32)).open()


def test_none_mode_iterations_bounded() -> None:
    with pytest.raises(ValueError, match="iterations"):
        NoneModeSlot.create(
            generate_data_key(), iterations=slots_module.NONE_MODE_MAX_ITERATIONS + 1
        )


def test_tpm_slot_is_a_record() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(TpmSlot)}
    assert fields == {
        "sealed_public": "bytes",
        "sealed_private": "bytes",
        "pcr_bank": "str",
        "pcrs": "list[int]",
        "policy_digest": "bytes",
        "primary": "str",
        "tpm_ek_fingerprint": "str",
    }
