"""encryption.info: round trips and strict validation that names the field."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from hostseal.secureconfig import (
    BundleCorrupt,
    EncryptionInfo,
    Mode,
    RecoveryKey,
    Requirements,
)
from hostseal.secureconfig.info import PendingRotation

from ._builders import SAVED_AT, tpm_info


def test_tpm_round_trip(info: EncryptionInfo) -> None:
    data = info.to_json()
    assert data.endswith(b"\n")
    assert EncryptionInfo.from_json(data) == info
    doc = json.loads(data)
    assert doc["format"] == "hostseal-encryption-info"
    assert doc["version"] == 2
    assert doc["rotation"] is None
    assert doc["mode"] == "TPM"
    assert doc["saved_at"] == "2025-03-01T12:30:00Z"
    assert doc["slots"]["none"] is None
    assert doc["slots"]["tpm"]["pcrs"] == [0, 2, 4, 7]
    assert doc["slots"]["tpm"]["policy_digest"] == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert (
        doc["slots"]["recovery"][0]["recovery_id"]
        == str(info.recovery_slots[0].recovery_id).upper()
    )


def test_none_round_trip(none_info: EncryptionInfo) -> None:
    doc = json.loads(none_info.to_json())
    assert doc["mode"] == "NONE"
    assert doc["slots"]["none"]["protection"] == "obfuscation, not encryption"
    assert doc["slots"]["none"]["iterations"] == 100_000
    assert EncryptionInfo.from_json(none_info.to_json()) == none_info


def test_time_normalised_to_utc(info: EncryptionInfo) -> None:
    doc = json.loads(info.to_json())
    doc["saved_at"] = "2025-03-01T14:30:00+02:00"
    parsed = EncryptionInfo.from_json(json.dumps(doc).encode())
    assert parsed.saved_at == SAVED_AT
    assert json.loads(parsed.to_json())["saved_at"] == "2025-03-01T12:30:00Z"


def test_constructor_checks_consistency(info: EncryptionInfo) -> None:
    with pytest.raises(ValueError, match=r"slots\.tpm: is null, but mode TPM needs a TPM slot"):
        dataclasses.replace(info, tpm_slot=None)
    with pytest.raises(ValueError, match="saved_at: has no time zone"):
        dataclasses.replace(info, saved_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match=r"slots\.none: is null"):
        dataclasses.replace(info, mode=Mode.NONE, tpm_slot=None)


Mutation = Callable[[dict[str, Any]], object]


def _set(path: str, value: object) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[last] = value

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        del target[last]

    return mutate


def _dup_recovery(doc: dict[str, Any]) -> None:
    doc["slots"]["recovery"].append(copy.deepcopy(doc["slots"]["recovery"][0]))


CASES: dict[str, tuple[Mutation, str]] = {
    "newer version": (
        _set("version", 3),
        "encryption.info has version 3; this hostseal reads versions 1 and 2 only.",
    ),
    "rotation in version 1": (
        _set("version", 1),
        "encryption.info has an unknown field 'rotation'",
    ),
    "rotation of an unknown slot": (
        _set("rotation", {"retiring": str(UUID(int=1)), "new": str(UUID(int=2))}),
        "encryption.info field 'rotation.retiring' names no recovery slot of this bundle.",
    ),
    "rotation not a GUID": (
        _set("rotation", {"retiring": "x", "new": "y"}),
        "encryption.info field 'rotation.retiring' is 'x', not a GUID.",
    ),
    "rotation unknown field": (
        _set("rotation", {"retiring": str(UUID(int=1)), "new": str(UUID(int=2)), "x": 1}),
        "encryption.info has an unknown field 'rotation.x'",
    ),
    "version as text": (_set("version", "1"), "encryption.info has version '1';"),
    "version true": (_set("version", True), "encryption.info has version True;"),
    "other format": (
        _set("format", "vmware-encryption-info"),
        "encryption.info is not a hostseal encryption info document (its 'format' is "
        "'vmware-encryption-info', expected 'hostseal-encryption-info').",
    ),
    "missing mode": (_drop("mode"), "encryption.info is missing the field 'mode'."),
    "missing generation": (
        _drop("generation"),
        "encryption.info is missing the field 'generation'.",
    ),
    "missing requirement": (
        _drop("requirements.require_secure_boot"),
        "encryption.info is missing the field 'requirements.require_secure_boot'.",
    ),
    "missing pcrs": (
        _drop("slots.tpm.pcrs"),
        "encryption.info is missing the field 'slots.tpm.pcrs'.",
    ),
    "missing salt": (
        _drop("slots.recovery.0.salt"),
        "encryption.info is missing the field 'slots.recovery[0].salt'.",
    ),
    "missing summary": (
        _drop("seal_boot_summary"),
        "encryption.info is missing the field 'seal_boot_summary'.",
    ),
    "unknown mode": (
        _set("mode", "tpm"),
        "encryption.info field 'mode' is 'tpm'; expected one of 'NONE', 'TPM'.",
    ),
    "generation as text": (
        _set("generation", "7"),
        "encryption.info field 'generation' must be an integer, not a string.",
    ),
    "generation bool": (
        _set("generation", True),
        "encryption.info field 'generation' must be an integer, not true/false.",
    ),
    "negative generation": (
        _set("generation", -1),
        "encryption.info field 'generation' is -1; expected 0 to 9223372036854775807.",
    ),
    "secure boot as text": (
        _set("requirements.require_secure_boot", "true"),
        "encryption.info field 'requirements.require_secure_boot' must be true or false, "
        "not a string.",
    ),
    "requirements a list": (
        _set("requirements", []),
        "encryption.info field 'requirements' must be an object, not a list.",
    ),
    "bad base64": (
        _set("slots.recovery.0.salt", "not base64!"),
        "encryption.info field 'slots.recovery[0].salt' is not valid base64.",
    ),
    "short salt": (
        _set("slots.recovery.0.salt", "AAAA"),
        "encryption.info field 'slots.recovery[0].salt' holds 3 bytes; expected 32.",
    ),
    "bad guid": (
        _set("slots.recovery.0.recovery_id", "nope"),
        "encryption.info field 'slots.recovery[0].recovery_id' is 'nope', not a GUID.",
    ),
    "other kdf": (
        _set("slots.recovery.0.kdf", "pbkdf2"),
        "encryption.info field 'slots.recovery[0].kdf' is 'pbkdf2'; expected one of 'hkdf-sha256'.",
    ),
    "duplicate recovery id": (
        _dup_recovery,
        "encryption.info field 'slots.recovery[1].recovery_id' repeats another slot's recovery ID.",
    ),
    "pcr out of range": (
        _set("slots.tpm.pcrs", [0, 24]),
        "encryption.info field 'slots.tpm.pcrs[1]' is 24; expected a PCR number 0 to 23.",
    ),
    "pcr repeated": (
        _set("slots.tpm.pcrs", [7, 7]),
        "encryption.info field 'slots.tpm.pcrs[1]' repeats PCR 7.",
    ),
    "pcr bank": (
        _set("slots.tpm.pcr_bank", "md5"),
        "encryption.info field 'slots.tpm.pcr_bank' is 'md5'; expected one of",
    ),
    "short policy digest": (
        _set("slots.tpm.policy_digest", "AAAA"),
        "encryption.info field 'slots.tpm.policy_digest' holds 3 bytes; expected 20 to 64.",
    ),
    "tpm slot missing in TPM mode": (
        _set("slots.tpm", None),
        "encryption.info field 'slots.tpm' is null, but mode TPM needs a TPM slot.",
    ),
    "NONE mode without none slot": (
        _set("mode", "NONE"),
        "encryption.info field 'slots.none' is null, but mode NONE needs a NONE-mode slot.",
    ),
    "no time zone": (
        _set("saved_at", "2025-03-01T12:30:00"),
        "encryption.info field 'saved_at' is '2025-03-01T12:30:00', a time without a time zone",
    ),
    "not a time": (
        _set("saved_at", "yesterday"),
        "encryption.info field 'saved_at' is 'yesterday', not an ISO 8601 time.",
    ),
    "summary a list": (
        _set("seal_boot_summary", [1]),
        "encryption.info field 'seal_boot_summary' must be an object, not a list.",
    ),
    "unknown top field": (
        _set("comment", "hi"),
        "encryption.info has an unknown field 'comment': it was written by another program "
        "or a newer hostseal.",
    ),
    "unknown slot field": (
        _set("slots.tpm.extra", 1),
        "encryption.info has an unknown field 'slots.tpm.extra'",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_validation_messages(info: EncryptionInfo, case: str) -> None:
    mutate, message = CASES[case]
    doc = json.loads(info.to_json())
    mutate(doc)
    with pytest.raises(BundleCorrupt) as err:
        EncryptionInfo.from_json(json.dumps(doc).encode())
    assert err.value.message.startswith(message), err.value.message


def test_none_slot_validation(none_info: EncryptionInfo) -> None:
    doc = json.loads(none_info.to_json())
    doc["slots"]["none"]["iterations"] = 1000
    with pytest.raises(BundleCorrupt) as err:
        EncryptionInfo.from_json(json.dumps(doc).encode())
    assert err.value.message == (
        "encryption.info field 'slots.none.iterations' is 1000; expected 100000 to 10000000."
    )
    doc = json.loads(none_info.to_json())
    doc["slots"]["none"]["protection"] = "encryption"
    with pytest.raises(BundleCorrupt, match=r"slots\.none\.protection"):
        EncryptionInfo.from_json(json.dumps(doc).encode())


def test_version_1_is_still_read(info: EncryptionInfo) -> None:
    doc = json.loads(info.to_json())
    doc["version"] = 1
    del doc["rotation"]
    assert EncryptionInfo.from_json(json.dumps(doc).encode()) == info


def test_pending_rotation_round_trip(data_key: bytes) -> None:
    old, new = RecoveryKey.generate(), RecoveryKey.generate()
    pending = dataclasses.replace(
        tpm_info(data_key, old, new), rotation=PendingRotation(old.recovery_id, new.recovery_id)
    )
    doc = json.loads(pending.to_json())
    assert doc["rotation"] == {
        "retiring": str(old.recovery_id).upper(),
        "new": str(new.recovery_id).upper(),
    }
    assert EncryptionInfo.from_json(pending.to_json()) == pending
    with pytest.raises(ValueError, match=r"rotation\.new: is the same recovery ID"):
        dataclasses.replace(pending, rotation=PendingRotation(old.recovery_id, old.recovery_id))


RAW_CASES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "encryption.info is not valid JSON:"),
    "not utf-8": (b"\xff\xfe{}", "encryption.info is not valid JSON:"),
    "array": (b"[]", "encryption.info document must be an object, not a list."),
    "NaN": (b'{"format": NaN}', "encryption.info is not valid JSON: NaN is not allowed."),
    "duplicate key": (
        b'{"format": 1, "format": 2}',
        "encryption.info has the field 'format' twice.",
    ),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "encryption.info is not valid JSON"),
    "too large": (b" " * (1 << 20) + b"{}", "encryption.info is 1048578 bytes, more than"),
}


@pytest.mark.parametrize("case", RAW_CASES, ids=list(RAW_CASES))
def test_raw_document_errors(case: str) -> None:
    data, message = RAW_CASES[case]
    with pytest.raises(BundleCorrupt) as err:
        EncryptionInfo.from_json(data)
    assert err.value.message.startswith(message), err.value.message
    assert err.value.remedy


def test_requirements_and_recovery_slots(data_key: bytes) -> None:
    from ._builders import tpm_info

    info = tpm_info(data_key, RecoveryKey.generate(), RecoveryKey.generate(), secure_boot=False)
    parsed = EncryptionInfo.from_json(info.to_json())
    assert parsed.requirements == Requirements(False, False)
    assert len(parsed.recovery_slots) == 2
