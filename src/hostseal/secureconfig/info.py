"""``encryption.info``: the versioned JSON document that says how ``local.tgz.ve`` is protected.

It holds the mode, the requirements, the key slots (TPM record, recovery slots, NONE-mode slot),
the TPM policy metadata (inside the TPM slot: bank, PCRs, policy digest), an opaque summary of the
measured boot at seal time, the save time, a generation counter and (version 2) the recovery-key
rotation in progress, if one was interrupted. Bytes are base64 (standard alphabet, padded).
Reading is strict: an unknown format or version, a missing or unknown field, a wrong type or
length is a :class:`BundleCorrupt` naming the field. Version 1 (no ``rotation``) is still read.

Pure: bytes in, values out (and back).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from hostseal.secureconfig.errors import BundleCorrupt
from hostseal.secureconfig.slots import (
    NONCE_BYTES,
    NONE_MODE_ITERATIONS,
    NONE_MODE_MAX_ITERATIONS,
    SALT_BYTES,
    WRAPPED_KEY_BYTES,
    NoneModeSlot,
    RecoverySlot,
    TpmSlot,
)

INFO_FORMAT = "hostseal-encryption-info"
INFO_VERSION = 2
"""The version written. Version 1 (no ``rotation`` field) is still read."""
READ_VERSIONS = (1, 2)
MAX_INFO_BYTES = 1 << 20
"""The largest ``encryption.info`` read (1 MiB); a real one is a few KiB."""
PCR_BANKS = frozenset({"sha1", "sha256", "sha384", "sha512", "sm3_256"})
MAX_GENERATION = (1 << 63) - 1

JsonObject = dict[str, Any]


class Mode(StrEnum):
    """``TPM``: the data key is sealed in the TPM. ``NONE``: obfuscation only (no TPM)."""

    TPM = "TPM"
    NONE = "NONE"


@dataclass(frozen=True)
class Requirements:
    """What the host must satisfy to unlock (``esxcli system settings encryption get``)."""

    require_secure_boot: bool = False
    require_exec_installed_only: bool = False


@dataclass(frozen=True)
class PendingRotation:
    """A ``recovery rotate`` between its two steps: the bundle holds both keys.

    ``retiring`` is the key being replaced (it still works), ``new`` the key added in step 1,
    which may never have been shown; a new ``recovery rotate`` drops ``new`` and starts again.
    """

    retiring: UUID
    new: UUID


@dataclass(frozen=True)
class EncryptionInfo:
    """The model of ``encryption.info``.

    Consistency (checked on construction and on reading): mode TPM has a ``tpm_slot`` and no
    ``none_slot``; mode NONE has a ``none_slot`` and no ``tpm_slot``; recovery IDs are unique;
    ``saved_at`` carries a time zone; ``0 <= generation < 2**63``.
    """

    mode: Mode
    requirements: Requirements
    generation: int
    saved_at: datetime
    tpm_slot: TpmSlot | None = None
    recovery_slots: list[RecoverySlot] = field(default_factory=list)
    none_slot: NoneModeSlot | None = None
    seal_boot_summary: JsonObject = field(default_factory=dict)
    rotation: PendingRotation | None = None

    def __post_init__(self) -> None:
        problem = _consistency_problem(
            self.mode,
            self.tpm_slot,
            self.recovery_slots,
            self.none_slot,
            self.saved_at,
            self.generation,
        ) or _rotation_problem(self.rotation, self.recovery_slots)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def to_dict(self) -> JsonObject:
        """The JSON-ready document."""
        return {
            "format": INFO_FORMAT,
            "version": INFO_VERSION,
            "mode": self.mode.value,
            "requirements": {
                "require_secure_boot": self.requirements.require_secure_boot,
                "require_exec_installed_only": self.requirements.require_exec_installed_only,
            },
            "generation": self.generation,
            "saved_at": _format_time(self.saved_at),
            "slots": {
                "tpm": None if self.tpm_slot is None else _tpm_to_dict(self.tpm_slot),
                "recovery": [_recovery_to_dict(s) for s in self.recovery_slots],
                "none": None if self.none_slot is None else _none_to_dict(self.none_slot),
            },
            "seal_boot_summary": self.seal_boot_summary,
            "rotation": None if self.rotation is None else _rotation_to_dict(self.rotation),
        }

    def to_json(self) -> bytes:
        """UTF-8 JSON, indented, ending in a newline."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        return (text + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> EncryptionInfo:
        """Parse and validate ``encryption.info``; any problem is a :class:`BundleCorrupt`."""
        return _parse(data)


def _consistency_problem(
    mode: Mode,
    tpm_slot: TpmSlot | None,
    recovery_slots: list[RecoverySlot],
    none_slot: NoneModeSlot | None,
    saved_at: datetime,
    generation: int,
) -> tuple[str, str] | None:
    """The first inconsistency as (field path, problem), or ``None``."""
    if mode is Mode.TPM:
        if tpm_slot is None:
            return "slots.tpm", "is null, but mode TPM needs a TPM slot"
        if none_slot is not None:
            return "slots.none", "must be null in mode TPM"
    else:
        if none_slot is None:
            return "slots.none", "is null, but mode NONE needs a NONE-mode slot"
        if tpm_slot is not None:
            return "slots.tpm", "must be null in mode NONE"
    seen: set[UUID] = set()
    for i, slot in enumerate(recovery_slots):
        if slot.recovery_id in seen:
            return f"slots.recovery[{i}].recovery_id", "repeats another slot's recovery ID"
        seen.add(slot.recovery_id)
    if saved_at.tzinfo is None:
        return "saved_at", "has no time zone"
    if not 0 <= generation <= MAX_GENERATION:
        return "generation", f"must be between 0 and {MAX_GENERATION}"
    return None


def _rotation_problem(
    rotation: PendingRotation | None, recovery_slots: list[RecoverySlot]
) -> tuple[str, str] | None:
    if rotation is None:
        return None
    ids = {s.recovery_id for s in recovery_slots}
    if rotation.retiring == rotation.new:
        return "rotation.new", "is the same recovery ID as rotation.retiring"
    for name, value in (("retiring", rotation.retiring), ("new", rotation.new)):
        if value not in ids:
            return f"rotation.{name}", "names no recovery slot of this bundle"
    return None


# --- writing -------------------------------------------------------------------------------


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _tpm_to_dict(slot: TpmSlot) -> JsonObject:
    return {
        "sealed_public": _b64(slot.sealed_public),
        "sealed_private": _b64(slot.sealed_private),
        "pcr_bank": slot.pcr_bank,
        "pcrs": list(slot.pcrs),
        "policy_digest": _b64(slot.policy_digest),
        "primary": slot.primary,
        "tpm_ek_fingerprint": slot.tpm_ek_fingerprint,
    }


def _recovery_to_dict(slot: RecoverySlot) -> JsonObject:
    return {
        "recovery_id": str(slot.recovery_id).upper(),
        "kdf": RecoverySlot.KDF,
        "wrap": RecoverySlot.WRAP,
        "salt": _b64(slot.salt),
        "nonce": _b64(slot.nonce),
        "wrapped_key": _b64(slot.wrapped_key),
    }


def _rotation_to_dict(rotation: PendingRotation) -> JsonObject:
    return {
        "retiring": str(rotation.retiring).upper(),
        "new": str(rotation.new).upper(),
    }


def _none_to_dict(slot: NoneModeSlot) -> JsonObject:
    return {
        "protection": NoneModeSlot.PROTECTION,
        "kdf": NoneModeSlot.KDF,
        "iterations": slot.iterations,
        "salt": _b64(slot.salt),
        "passphrase": _b64(slot.passphrase),
        "wrap": NoneModeSlot.WRAP,
        "nonce": _b64(slot.nonce),
        "wrapped_key": _b64(slot.wrapped_key),
    }


# --- reading -------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _corrupt(path: str, problem: str) -> BundleCorrupt:
    return BundleCorrupt(f"encryption.info field '{path}' {problem}.")


class _Fields:
    """Typed access to one JSON object; every problem names the field's full path."""

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            where = f"field '{path}'" if path else "document"
            raise BundleCorrupt(f"encryption.info {where} must be an object, not {_kind(obj)}.")
        self.obj: dict[str, object] = obj
        self.path = path

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        if key not in self.obj:
            raise BundleCorrupt(f"encryption.info is missing the field '{self._p(key)}'.")
        return self.obj[key]

    def typed(self, key: str, kind: type, name: str) -> Any:
        value = self.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _corrupt(self._p(key), f"must be {name}, not {_kind(value)}")
        return value

    def string(self, key: str, choices: frozenset[str] | None = None) -> str:
        value: str = self.typed(key, str, "a string")
        if choices is not None and value not in choices:
            allowed = ", ".join(repr(c) for c in sorted(choices))
            raise _corrupt(self._p(key), f"is {value!r}; expected one of {allowed}")
        return value

    def boolean(self, key: str) -> bool:
        value: bool = self.typed(key, bool, "true or false")
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value: int = self.typed(key, int, "an integer")
        if not low <= value <= high:
            raise _corrupt(self._p(key), f"is {value}; expected {low} to {high}")
        return value

    def raw(self, key: str, low: int, high: int | None = None) -> bytes:
        text: str = self.typed(key, str, "a base64 string")
        try:
            value = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise _corrupt(self._p(key), "is not valid base64") from None
        high = low if high is None else high
        if not low <= len(value) <= high:
            want = f"{low}" if low == high else f"{low} to {high}"
            raise _corrupt(self._p(key), f"holds {len(value)} bytes; expected {want}")
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key), self._p(key))

    def optional(self, key: str, read: Callable[[_Fields], Any]) -> Any:
        if self.get(key) is None:
            return None
        return read(self.sub(key))

    def items(self, key: str) -> list[_Fields]:
        values: list[object] = self.typed(key, list, "a list")
        return [_Fields(v, f"{self._p(key)}[{i}]") for i, v in enumerate(values)]

    def done(self, known: set[str]) -> None:
        unknown = sorted(set(self.obj) - known)
        if unknown:
            raise BundleCorrupt(
                f"encryption.info has an unknown field '{self._p(unknown[0])}': it was written "
                "by another program or a newer hostseal.",
                "Use the hostseal version that wrote it, or restore a backup.",
            )


_TOP_FIELDS = {
    "format",
    "version",
    "mode",
    "requirements",
    "generation",
    "saved_at",
    "slots",
    "seal_boot_summary",
    "rotation",
}
_TPM_FIELDS = {
    "sealed_public",
    "sealed_private",
    "pcr_bank",
    "pcrs",
    "policy_digest",
    "primary",
    "tpm_ek_fingerprint",
}
_NONE_FIELDS = {
    "protection",
    "kdf",
    "iterations",
    "salt",
    "passphrase",
    "wrap",
    "nonce",
    "wrapped_key",
}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise BundleCorrupt(f"encryption.info has the field '{key}' twice.")
        obj[key] = value
    return obj


def _load(data: bytes) -> object:
    if len(data) > MAX_INFO_BYTES:
        raise BundleCorrupt(
            f"encryption.info is {len(data)} bytes, more than the {MAX_INFO_BYTES} allowed."
        )
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
        raise BundleCorrupt(f"encryption.info is not valid JSON: {exc}.") from None


def _parse(data: bytes) -> EncryptionInfo:
    top = _Fields(_load(data), "")
    fmt = top.get("format")
    if fmt != INFO_FORMAT:
        raise BundleCorrupt(
            f"encryption.info is not a hostseal encryption info document "
            f"(its 'format' is {fmt!r}, expected {INFO_FORMAT!r})."
        )
    version = top.get("version")
    if version not in READ_VERSIONS or isinstance(version, bool):
        raise BundleCorrupt(
            f"encryption.info has version {version!r}; this hostseal reads versions "
            f"{' and '.join(map(str, READ_VERSIONS))} only.",
            "Unlock it with the hostseal version that wrote it, or upgrade hostseal.",
        )
    mode = Mode(top.string("mode", frozenset(m.value for m in Mode)))
    req = top.sub("requirements")
    requirements = Requirements(
        require_secure_boot=req.boolean("require_secure_boot"),
        require_exec_installed_only=req.boolean("require_exec_installed_only"),
    )
    req.done({"require_secure_boot", "require_exec_installed_only"})
    generation = top.integer("generation", 0, MAX_GENERATION)
    saved_at = _parse_time(top, "saved_at")
    slots = top.sub("slots")
    tpm_slot: TpmSlot | None = slots.optional("tpm", _read_tpm)
    recovery_slots = [_read_recovery(f) for f in slots.items("recovery")]
    none_slot: NoneModeSlot | None = slots.optional("none", _read_none)
    slots.done({"tpm", "recovery", "none"})
    summary: JsonObject = top.typed("seal_boot_summary", dict, "an object")
    rotation: PendingRotation | None = None
    if version == 1:
        top.done(_TOP_FIELDS - {"rotation"})
    else:
        rotation = top.optional("rotation", _read_rotation)
        top.done(_TOP_FIELDS)
    problem = _consistency_problem(
        mode, tpm_slot, recovery_slots, none_slot, saved_at, generation
    ) or _rotation_problem(rotation, recovery_slots)
    if problem is not None:
        raise _corrupt(*problem)
    return EncryptionInfo(
        mode=mode,
        requirements=requirements,
        generation=generation,
        saved_at=saved_at,
        tpm_slot=tpm_slot,
        recovery_slots=recovery_slots,
        none_slot=none_slot,
        seal_boot_summary=summary,
        rotation=rotation,
    )


def _read_guid(f: _Fields, key: str) -> UUID:
    text = f.string(key)
    try:
        return UUID(text)
    except ValueError:
        raise _corrupt(f"{f.path}.{key}", f"is {text[:40]!r}, not a GUID") from None


def _read_rotation(f: _Fields) -> PendingRotation:
    rotation = PendingRotation(retiring=_read_guid(f, "retiring"), new=_read_guid(f, "new"))
    f.done({"retiring", "new"})
    return rotation


def _parse_time(obj: _Fields, key: str) -> datetime:
    text = obj.string(key)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _corrupt(key, f"is {text[:40]!r}, not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise _corrupt(key, f"is {text!r}, a time without a time zone (expected UTC, ...Z)")
    return value.astimezone(UTC)


def _read_tpm(f: _Fields) -> TpmSlot:
    pcrs_raw: list[object] = f.typed("pcrs", list, "a list")
    pcrs: list[int] = []
    for i, pcr in enumerate(pcrs_raw):
        if not isinstance(pcr, int) or isinstance(pcr, bool) or not 0 <= pcr <= 23:
            raise _corrupt(f"{f.path}.pcrs[{i}]", f"is {pcr!r}; expected a PCR number 0 to 23")
        if pcr in pcrs:
            raise _corrupt(f"{f.path}.pcrs[{i}]", f"repeats PCR {pcr}")
        pcrs.append(pcr)
    slot = TpmSlot(
        sealed_public=f.raw("sealed_public", 1, 4096),
        sealed_private=f.raw("sealed_private", 1, 4096),
        pcr_bank=f.string("pcr_bank", PCR_BANKS),
        pcrs=pcrs,
        # No PCRs: bound to the TPM alone, with no policy (see secureconfig.requirements).
        policy_digest=f.raw("policy_digest", 20, 64) if pcrs else f.raw("policy_digest", 0),
        primary=f.string("primary"),
        tpm_ek_fingerprint=f.string("tpm_ek_fingerprint"),
    )
    f.done(_TPM_FIELDS)
    return slot


def _read_recovery(f: _Fields) -> RecoverySlot:
    recovery_id = _read_guid(f, "recovery_id")
    f.string("kdf", frozenset({RecoverySlot.KDF}))
    f.string("wrap", frozenset({RecoverySlot.WRAP}))
    slot = RecoverySlot(
        recovery_id=recovery_id,
        salt=f.raw("salt", SALT_BYTES),
        nonce=f.raw("nonce", NONCE_BYTES),
        wrapped_key=f.raw("wrapped_key", WRAPPED_KEY_BYTES),
    )
    f.done({"recovery_id", "kdf", "wrap", "salt", "nonce", "wrapped_key"})
    return slot


def _read_none(f: _Fields) -> NoneModeSlot:
    f.string("protection", frozenset({NoneModeSlot.PROTECTION}))
    f.string("kdf", frozenset({NoneModeSlot.KDF}))
    f.string("wrap", frozenset({NoneModeSlot.WRAP}))
    slot = NoneModeSlot(
        salt=f.raw("salt", SALT_BYTES),
        passphrase=f.raw("passphrase", SALT_BYTES),
        iterations=f.integer("iterations", NONE_MODE_ITERATIONS, NONE_MODE_MAX_ITERATIONS),
        nonce=f.raw("nonce", NONCE_BYTES),
        wrapped_key=f.raw("wrapped_key", WRAPPED_KEY_BYTES),
    )
    f.done(_NONE_FIELDS)
    return slot
