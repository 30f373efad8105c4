"""Event types, replay rules (H-CRTM, localities, DRTM PCRs) and descriptions."""

from __future__ import annotations

import hashlib
import struct

import pytest

from hostseal.measure import (
    EFI_GLOBAL_VARIABLE,
    EventLogWriter,
    EventType,
    describe,
    efi_variable_data,
    event_type_name,
    logged_banks,
    parse_event_log,
    replay,
    separators,
)


def test_event_types_are_the_tcg_ones() -> None:
    assert EventType.EV_NO_ACTION == 3
    assert EventType.EV_S_CRTM_VERSION == 8
    assert EventType.EV_EFI_VARIABLE_DRIVER_CONFIG == 0x80000001
    assert EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2 == 0x8000000A
    assert EventType.EV_EFI_HANDOFF_TABLES2 == 0x8000000B
    assert EventType.EV_EFI_VARIABLE_BOOT2 == 0x8000000C
    assert EventType.EV_EFI_HCRTM_EVENT == 0x80000010
    assert EventType.EV_EFI_VARIABLE_AUTHORITY == 0x800000E0
    assert [EventType.EV_EFI_SPDM_FIRMWARE_BLOB, EventType.EV_EFI_SPDM_DEVICE_AUTHORITY] == [
        0x800000E1,
        0x800000E4,
    ]
    assert event_type_name(0x80000003) == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert event_type_name(0x12345678) == "EV_UNKNOWN_0x12345678"


def test_hcrtm_boot_starts_pcr0_at_locality_4_and_extends_the_hcrtm_digest() -> None:
    w = EventLogWriter(banks=("sha256",))
    w.add_startup_locality(4)
    hcrtm = {"sha256": hashlib.sha256(b"H-CRTM code").digest()}
    w.add(0, EventType.EV_EFI_HCRTM_EVENT, b"HCRTM", digests=hcrtm)
    log = parse_event_log(w.to_bytes())
    expected = hashlib.sha256(bytes(31) + b"\x04" + hcrtm["sha256"]).digest()
    assert replay(log) == {"sha256": {0: expected}}
    assert describe(log.events[2]) == "H-CRTM measurement"


def test_drtm_pcrs_start_at_all_ones() -> None:
    w = EventLogWriter(banks=("sha1",))
    digest = w.add(17, EventType.EV_POST_CODE, b"drtm")["sha1"]
    log = parse_event_log(w.to_bytes())
    assert replay(log)["sha1"][17] == hashlib.sha1(b"\xff" * 20 + digest).digest()


def test_no_action_events_are_not_extended() -> None:
    w = EventLogWriter(banks=("sha256",))
    w.add_no_action(b"SP800-155 Event\0" + bytes(8))
    log = parse_event_log(w.to_bytes())
    assert replay(log) == {}
    assert logged_banks(log) == ()


def test_descriptions() -> None:
    w = EventLogWriter(banks=("sha256",))
    w.add(7, EventType.EV_SEPARATOR, b"\x01\0\0\0")
    w.add(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2, b"\x04BIOS" + struct.pack("<QQ", 0x1000, 64))
    w.add(
        1,
        EventType.EV_EFI_VARIABLE_BOOT,
        efi_variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", b"\x01\x00\x02\x00"),
    )
    w.add(5, EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation")
    w.add(12, EventType.EV_EVENT_TAG, struct.pack("<II", 0x8F3B22EC, 5) + b"initrd")
    w.add(2, EventType.EV_EFI_BOOT_SERVICES_DRIVER, b"\x01\x02")
    log = parse_event_log(w.to_bytes())
    assert [describe(e) for e in log.events[1:]] == [
        "error separator",
        "firmware blob 'BIOS' at 0x1000, 64 bytes",
        "BootOrder = 0001,0002",
        "Exit Boot Services Invocation",
        "tagged event 0x8f3b22ec: initr",
        "<malformed EV_EFI_BOOT_SERVICES_DRIVER data: UEFI_IMAGE_LOAD_EVENT of 2 bytes is "
        "shorter than 32>",
    ]
    [separator] = separators(log)
    assert separator.error and separator.verified


@pytest.mark.parametrize(("value", "state"), [(b"\x01", "enabled"), (b"\x00", "disabled")])
def test_secure_boot_described(value: bytes, state: str) -> None:
    w = EventLogWriter(banks=("sha256",))
    w.add(
        7,
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", value),
    )
    text = describe(parse_event_log(w.to_bytes()).events[1])
    assert text == f"SecureBoot = {state}"
