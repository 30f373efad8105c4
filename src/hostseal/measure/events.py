"""The data model of a TCG event log: event types, hash algorithms, events and the log."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from hostseal.measure.errors import EventLogError


class EventType(IntEnum):
    """TCG event types (TCG PC Client Platform Firmware Profile, section 10.4.1)."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_POST_CODE2 = 0x00000013
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_GPT_EVENT2 = 0x8000000D
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
    EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4


_TYPE_NAMES: dict[int, str] = {t.value: t.name for t in EventType}


def event_type_name(value: int) -> str:
    """``EV_SEPARATOR`` for 4; ``EV_UNKNOWN_0x12345678`` for a type TCG does not define."""
    name = _TYPE_NAMES.get(value)
    return name if name is not None else f"EV_UNKNOWN_0x{value:08x}"


# --- hash algorithms (TPM_ALG_ID) ------------------------------------------------------------

HashFunction = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A PCR bank's hash algorithm: TPM_ALG_ID, hostseal's bank name and digest size."""

    alg_id: int
    name: str
    size: int


ALGORITHMS: dict[int, Algorithm] = {
    a.alg_id: a
    for a in (
        Algorithm(0x0004, "sha1", 20),
        Algorithm(0x000B, "sha256", 32),
        Algorithm(0x000C, "sha384", 48),
        Algorithm(0x000D, "sha512", 64),
        Algorithm(0x0012, "sm3_256", 32),
        Algorithm(0x0027, "sha3_256", 32),
        Algorithm(0x0028, "sha3_384", 48),
        Algorithm(0x0029, "sha3_512", 64),
    )
}
ALGORITHMS_BY_NAME: dict[str, Algorithm] = {a.name: a for a in ALGORITHMS.values()}


def algorithm_name(alg_id: int) -> str:
    """The bank name of a TPM_ALG_ID: ``sha256`` for 0x000B, ``alg_0x1234`` if unknown."""
    alg = ALGORITHMS.get(alg_id)
    return alg.name if alg is not None else f"alg_0x{alg_id:04x}"


def _sm3_function() -> HashFunction | None:
    try:
        hashlib.new("sm3", b"")
    except ValueError:
        pass
    else:
        return lambda data: hashlib.new("sm3", data).digest()
    try:
        from cryptography.hazmat.primitives import hashes

        probe = hashes.Hash(hashes.SM3())
        probe.update(b"")
        probe.finalize()
    except Exception:  # cryptography without SM3 (UnsupportedAlgorithm, AttributeError)
        return None

    def sm3(data: bytes) -> bytes:
        h = hashes.Hash(hashes.SM3())
        h.update(data)
        return h.finalize()

    return sm3


def _hash_functions() -> dict[str, HashFunction]:
    sha1, sha256, sha384, sha512 = hashlib.sha1, hashlib.sha256, hashlib.sha384, hashlib.sha512
    sha3_256, sha3_384, sha3_512 = hashlib.sha3_256, hashlib.sha3_384, hashlib.sha3_512
    functions: dict[str, HashFunction] = {
        "sha1": lambda data: sha1(data).digest(),
        "sha256": lambda data: sha256(data).digest(),
        "sha384": lambda data: sha384(data).digest(),
        "sha512": lambda data: sha512(data).digest(),
        "sha3_256": lambda data: sha3_256(data).digest(),
        "sha3_384": lambda data: sha3_384(data).digest(),
        "sha3_512": lambda data: sha3_512(data).digest(),
    }
    sm3 = _sm3_function()
    if sm3 is not None:
        functions["sm3_256"] = sm3
    return functions


HASH_FUNCTIONS: dict[str, HashFunction] = _hash_functions()


def hash_function(bank: str) -> HashFunction:
    """The hash of a PCR bank; raises :class:`EventLogError` when hostseal cannot compute it."""
    function = HASH_FUNCTIONS.get(bank)
    if function is None:
        if bank == "sm3_256":
            raise EventLogError(
                "Cannot compute the sm3_256 PCR bank: neither this Python's hashlib (OpenSSL) "
                "nor the cryptography package offers SM3.",
                "Use an OpenSSL build with SM3, or replay and compare only the other banks "
                "(for example sha256).",
            )
        raise EventLogError(
            f"Cannot compute the {bank} PCR bank: hostseal does not know this hash algorithm.",
            "Replay and compare only the banks hostseal knows (sha1, sha256, sha384, sha512).",
        )
    return function


# --- events and the log ----------------------------------------------------------------------


@dataclass(slots=True)
class Event:
    """One measurement: the PCR, the event type, a digest per bank and the event data.

    ``index`` counts the log's header (Spec ID) event as 0, like ``tpm2_eventlog``'s EventNum;
    ``offset`` is the event's byte offset in the raw log. ``event_type`` is the raw number (the
    log may use types TCG does not define); :attr:`type_name` gives its name.
    """

    index: int
    offset: int
    pcr: int
    event_type: int
    digests: dict[str, bytes]
    data: bytes
    #: (data, digests, Binding) of :func:`hostseal.measure.binding.binding`, computed once.
    binding_cache: Any = field(default=None, repr=False, compare=False)

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def extended(self) -> bool:
        """Whether the event was extended into its PCR (every type but EV_NO_ACTION)."""
        return self.event_type != 3  # EventType.EV_NO_ACTION


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """The crypto-agile log's header (TCG_EfiSpecIDEvent, "Spec ID Event03")."""

    platform_class: int
    spec_version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int
    algorithms: tuple[Algorithm, ...]
    vendor_info: bytes


FORMAT_CRYPTO_AGILE = "crypto_agile"
FORMAT_LEGACY_SHA1 = "legacy_sha1"


@dataclass(slots=True)
class EventLog:
    """A parsed event log.

    ``format`` is ``"crypto_agile"`` (TCG_PCR_EVENT2 records after a Spec ID Event03 header) or
    ``"legacy_sha1"`` (TCG_PCClientPCREvent records, SHA-1 only). ``banks`` lists the banks the
    header declares (``("sha1",)`` for a legacy log). ``events`` includes the header event.
    ``startup_locality`` is the locality of a StartupLocality event, if the log has one.
    """

    format: str
    banks: tuple[str, ...]
    events: list[Event]
    spec_id: SpecIdEvent | None = None
    startup_locality: int | None = None
    size: int = 0

    def __len__(self) -> int:
        return len(self.events)

    def events_of_pcr(self, pcr: int) -> list[Event]:
        return [e for e in self.events if e.pcr == pcr and e.extended]

    def pcrs(self) -> list[int]:
        """The PCRs that events are extended into, ascending."""
        return sorted({e.pcr for e in self.events if e.extended})
