"""EventLogWriter: what it writes parses, replays to the running extend, and decodes."""

from __future__ import annotations

import struct

import pytest

from hostseal.measure import (
    EFI_GLOBAL_VARIABLE,
    EventLogWriter,
    EventType,
    boot_applications,
    compare_pcrs,
    decode_image_load,
    decode_variable,
    describe,
    efi_variable_data,
    image_load_event,
    kernel_cmdline,
    parse_event_log,
    replay,
    scrtm_version,
    secure_boot_databases,
    secure_boot_state,
    summarize,
)
from hostseal.measure.events import HASH_FUNCTIONS

from ._boots import boot_log, extend_all


@pytest.mark.parametrize(
    "banks", [("sha1", "sha256"), ("sha256",), ("sha1", "sha256", "sha384", "sha512")]
)
@pytest.mark.parametrize("secure_boot", [True, False])
def test_round_trip(banks: tuple[str, ...], secure_boot: bool) -> None:
    raw, extends = boot_log(banks=banks, secure_boot=secure_boot, cmdline="ro quiet splash")
    log = parse_event_log(raw)
    assert log.format == "crypto_agile"
    assert log.banks == banks
    assert len(log.events) == len(extends) + 1
    assert replay(log) == extend_all(extends, banks)
    assert secure_boot_state(log) is secure_boot
    assert kernel_cmdline(log) == "ro quiet splash"
    assert [a.path for a in boot_applications(log)] == [
        r"\EFI\ubuntu\shimx64.efi",
        r"\EFI\ubuntu\grubx64.efi",
    ]
    assert scrtm_version(log) == "lab firmware 1.0"
    assert secure_boot_databases(log)["db"].describe() == "db: 0 certificates, 1 hash"
    assert summarize(log)["secure_boot"] is secure_boot


def test_startup_locality_round_trip() -> None:
    raw, extends = boot_log(locality=3)
    log = parse_event_log(raw)
    assert log.startup_locality == 3
    assert replay(log) == extend_all(extends, ("sha1", "sha256"), locality=3)
    assert describe(log.events[1]) == "StartupLocality 3"


@pytest.mark.skipif("sm3_256" not in HASH_FUNCTIONS, reason="no SM3 in this OpenSSL")
def test_sm3_bank_round_trip() -> None:
    w = EventLogWriter(banks=("sm3_256", "sha256"))
    digests = w.add(0, EventType.EV_POST_CODE, b"POST CODE")
    log = parse_event_log(w.to_bytes())
    value = replay(log)["sm3_256"][0]
    assert value == HASH_FUNCTIONS["sm3_256"](bytes(32) + digests["sm3_256"])


def test_add_returns_the_digests_to_extend() -> None:
    w = EventLogWriter(banks=("sha1", "sha256"))
    plain = w.add(pcr=0, event_type=EventType.EV_S_CRTM_VERSION, data=b"v1")
    assert plain == {
        "sha1": HASH_FUNCTIONS["sha1"](b"v1"),
        "sha256": HASH_FUNCTIONS["sha256"](b"v1"),
    }
    given = {"sha1": b"\x11" * 20, "sha256": b"\x22" * 32}
    assert w.add(4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"x", digests=given) == given
    other = w.add(8, EventType.EV_IPL, b"kernel_cmdline: ro quiet\0", digest_data=b"ro quiet")
    assert other["sha256"] == HASH_FUNCTIONS["sha256"](b"ro quiet")
    assert w.add_no_action(b"SP800-155 Event\0") == {"sha1": bytes(20), "sha256": bytes(32)}
    log = parse_event_log(w.to_bytes())
    assert [e.event_type for e in log.events] == [
        EventType.EV_NO_ACTION,
        EventType.EV_S_CRTM_VERSION,
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        EventType.EV_IPL,
        EventType.EV_NO_ACTION,
    ]
    assert log.events[2].digests == given
    assert describe(log.events[4]) == "SP800-155 Event"
    assert replay(log)["sha1"][0] == HASH_FUNCTIONS["sha1"](bytes(20) + plain["sha1"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pcr": 24, "event_type": EventType.EV_IPL, "data": b""}, "PCR 24 does not exist"),
        ({"pcr": 0, "event_type": EventType.EV_NO_ACTION, "data": b""}, "use add_no_action"),
        (
            {"pcr": 4, "event_type": EventType.EV_IPL, "data": b"", "digests": {"sha1": bytes(20)}},
            "missing ['sha256']",
        ),
        (
            {
                "pcr": 4,
                "event_type": EventType.EV_IPL,
                "data": b"",
                "digests": {"sha1": bytes(20), "sha256": bytes(20)},
            },
            "a sha256 digest is 32 bytes, got 20",
        ),
        (
            {
                "pcr": 4,
                "event_type": EventType.EV_IPL,
                "data": b"",
                "digests": {},
                "digest_data": b"",
            },
            "not both",
        ),
    ],
)
def test_add_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    w = EventLogWriter(banks=("sha1", "sha256"))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        w.add(**kwargs)  # type: ignore[arg-type]


def test_writer_refuses_bad_banks_and_late_locality() -> None:
    with pytest.raises(ValueError, match="unknown PCR bank 'md5'"):
        EventLogWriter(banks=("md5",))
    with pytest.raises(ValueError, match="at least one"):
        EventLogWriter(banks=())
    w = EventLogWriter()
    w.add(0, EventType.EV_POST_CODE, b"x")
    with pytest.raises(ValueError, match="before PCR 0 is extended"):
        w.add_startup_locality(3)


def test_encoders_round_trip_with_their_decoders() -> None:
    raw = efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    assert raw[:16] == EFI_GLOBAL_VARIABLE.bytes_le
    assert struct.unpack_from("<QQ", raw, 16) == (10, 1)
    variable = decode_variable(raw)
    assert (variable.guid, variable.name, variable.data) == (
        EFI_GLOBAL_VARIABLE,
        "SecureBoot",
        b"\x01",
    )
    image = decode_image_load(image_load_event(r"\EFI\BOOT\BOOTX64.EFI", 4096, location=0x1000))
    assert (image.location, image.length, image.file_path) == (
        0x1000,
        4096,
        r"\EFI\BOOT\BOOTX64.EFI",
    )
    assert image.device_path == r"File(\EFI\BOOT\BOOTX64.EFI)"


def test_writer_output_matches_tpm_extends() -> None:
    raw, extends = boot_log()
    log = parse_event_log(raw)
    assert compare_pcrs(log, extend_all(extends, ("sha1", "sha256"))) == []
