"""diff_logs messages and compare_pcrs / verify_pcrs data, on boots written with the writer."""

from __future__ import annotations

import pytest

from hostseal.measure import (
    EventLogError,
    EventLogReplayMismatch,
    EventType,
    compare_pcrs,
    diff_logs,
    parse_event_log,
    replay,
    verify_pcrs,
)

from ._boots import boot_log, extend_all


def _diff(old: dict[str, object], new: dict[str, object]) -> list[tuple[int, str, str]]:
    before = parse_event_log(boot_log(**old)[0])  # type: ignore[arg-type]
    after = parse_event_log(boot_log(**new)[0])  # type: ignore[arg-type]
    return [(c.pcr, c.kind, c.message) for c in diff_logs(before, after)]


def test_identical_logs_have_no_changes() -> None:
    log = parse_event_log(boot_log()[0])
    assert diff_logs(log, parse_event_log(boot_log()[0])) == []
    assert diff_logs(log, log) == []


def test_secure_boot_enabled_to_disabled() -> None:
    assert _diff({"secure_boot": True}, {"secure_boot": False}) == [
        (7, "secure_boot_disabled", "PCR 7: Secure Boot went from enabled to disabled")
    ]
    assert _diff({"secure_boot": False}, {"secure_boot": True}) == [
        (7, "secure_boot_enabled", "PCR 7: Secure Boot went from disabled to enabled")
    ]


def test_boot_application_digest_change() -> None:
    assert _diff({"shim": b"shim-15.7"}, {"shim": b"shim-15.8"}) == [
        (
            4,
            "boot_application_changed",
            r"PCR 4: boot application \EFI\ubuntu\shimx64.efi (path unverified) changed digest",
        )
    ]


def test_kernel_cmdline_change() -> None:
    changes = _diff({"cmdline": "ro quiet"}, {"cmdline": "ro quiet init=/bin/sh"})
    assert (
        8,
        "kernel_cmdline_changed",
        "PCR 8: kernel command line changed from 'ro quiet' to 'ro quiet init=/bin/sh'",
    ) in changes
    # GRUB also logs the "linux" command it ran; that event changed as well.
    assert (
        8,
        "event_changed",
        "PCR 8: EV_IPL changed from 'grub_cmd: linux /vmlinuz ro quiet' to "
        "'grub_cmd: linux /vmlinuz ro quiet init=/bin/sh'",
    ) in changes
    assert len(changes) == 2


def test_secure_boot_db_and_firmware_changes() -> None:
    assert _diff({"db": [b"\x03" * 32]}, {"db": [b"\x03" * 32, b"\x04" * 32]}) == [
        (
            7,
            "secure_boot_db_changed",
            "PCR 7: Secure Boot database db changed (0 certificates, 1 hash -> "
            "0 certificates, 2 hashes)",
        )
    ]
    assert _diff({"firmware": "fw 1.0"}, {"firmware": "fw 1.1"}) == [
        (
            0,
            "firmware_changed",
            "PCR 0: firmware version changed from 'fw 1.0' to 'fw 1.1'",
        )
    ]
    assert _diff({}, {"locality": 3}) == [
        (0, "startup_locality_changed", "PCR 0: the TPM started at locality 0, now at 3")
    ]


def test_changes_carry_the_events() -> None:
    old = parse_event_log(boot_log(secure_boot=True)[0])
    new = parse_event_log(boot_log(secure_boot=False)[0])
    [change] = diff_logs(old, new)
    assert [e.index for e in change.old] == [e.index for e in change.new] == [3]
    assert change.to_dict() == {
        "pcr": 7,
        "kind": "secure_boot_disabled",
        "message": "PCR 7: Secure Boot went from enabled to disabled",
        "old_events": [3],
        "new_events": [3],
    }


def test_added_and_removed_events() -> None:
    from hostseal.measure import EventLogWriter

    a = EventLogWriter(banks=("sha256",))
    a.add(9, EventType.EV_IPL, b"/boot/grub/grub.cfg\0")
    b = EventLogWriter(banks=("sha256",))
    b.add(9, EventType.EV_IPL, b"/boot/grub/grub.cfg\0")
    b.add(9, EventType.EV_IPL, b"/boot/extra.cfg\0")
    old, new = parse_event_log(a.to_bytes()), parse_event_log(b.to_bytes())
    assert [(c.kind, c.message) for c in diff_logs(old, new)] == [
        ("event_added", "PCR 9: event added: EV_IPL /boot/extra.cfg")
    ]
    assert [(c.kind, c.message) for c in diff_logs(new, old)] == [
        ("event_removed", "PCR 9: event removed: EV_IPL /boot/extra.cfg")
    ]


# --- compare_pcrs ---------------------------------------------------------------------------


def test_compare_pcrs_reports_mismatches_as_data() -> None:
    raw, extends = boot_log()
    log = parse_event_log(raw)
    tpm = extend_all(extends, ("sha1", "sha256"))
    assert compare_pcrs(log, tpm) == []
    tpm["sha256"][7] = b"\x07" * 32
    [mismatch] = compare_pcrs(log, tpm)
    assert (mismatch.bank, mismatch.pcr, mismatch.actual) == ("sha256", 7, b"\x07" * 32)
    assert mismatch.expected == replay(log)["sha256"][7]
    assert [e.index for e in mismatch.events] == [e.index for e in log.events if e.pcr == 7]
    assert mismatch.to_dict()["events"] == [e.index for e in mismatch.events]
    with pytest.raises(EventLogReplayMismatch) as caught:
        verify_pcrs(log, tpm)
    assert caught.value.message == (
        "The event log does not match the TPM's PCR values: sha256 PCR 7 differ from the "
        "replayed log."
    )
    assert caught.value.mismatches == (mismatch,)
    assert isinstance(caught.value, EventLogError)
    assert caught.value.to_dict()["mismatches"] == [mismatch.to_dict()]


def test_compare_pcrs_checks_untouched_firmware_pcrs_only() -> None:
    raw, extends = boot_log()
    log = parse_event_log(raw)
    tpm = extend_all(extends, ("sha256",))
    tpm["sha256"][10] = b"\x10" * 32  # IMA: not in the firmware log, not compared
    tpm["sha256"][16] = b"\x16" * 32
    assert compare_pcrs(log, tpm) == []
    # A firmware PCR must be at reset when the log has no event for it: here all 0-7 have one,
    # so take a log with PCR 0 only.
    from hostseal.measure import EventLogWriter

    w = EventLogWriter(banks=("sha256",))
    w.add(0, EventType.EV_POST_CODE, b"x")
    small = parse_event_log(w.to_bytes())
    [mismatch] = compare_pcrs(small, {"sha256": {3: b"\x33" * 32}})
    assert (mismatch.pcr, mismatch.expected, mismatch.events) == (3, bytes(32), ())


def test_compare_pcrs_without_a_common_bank_refuses() -> None:
    log = parse_event_log(boot_log(banks=("sha256",))[0])
    with pytest.raises(EventLogError) as caught:
        compare_pcrs(log, {"sha1": {0: bytes(20)}})
    assert caught.value.message == (
        "The event log and the PCR values share no bank: the log has sha256, the PCRs are sha1."
    )
