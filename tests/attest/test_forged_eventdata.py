"""Issue 12 item 1: forged event data. A host rewrites the *data* of an event in its log (the
text of its command line, a variable's value, a path, an action string) and keeps the measured
digests, so the log still replays to the quoted PCRs. Every datum a verdict relies on must match
its digest in every bank; data no digest covers is shown as unverified and decides nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass

import pytest

from _forge import find, rewrite
from hostseal.attest.policy import ReferencePolicy, capture_policy
from hostseal.attest.verdict import evaluate
from hostseal.lab.firmware import DEFAULT_CMDLINE, BootConfig, measure_boot
from hostseal.measure import (
    EFI_GLOBAL_VARIABLE,
    EventLog,
    EventType,
    describe,
    efi_variable_data,
    image_load_event,
    parse_event_log,
    replay,
)

BANK_SETS = {
    "sha256 log": ("sha256",),
    "sha1+sha256 log": ("sha1", "sha256"),
    "sha1+sha256+sha384 log": ("sha1", "sha256", "sha384"),
}
SHELL = DEFAULT_CMDLINE + " init=/bin/sh"
MEASUREMENT = "does not match its measurement"


def boot(banks: tuple[str, ...], **changes: object) -> bytes:
    raw, _ = measure_boot(BootConfig().with_changes(**changes), banks)
    return raw


def quoted(log: EventLog) -> dict[str, dict[int, bytes]]:
    """What a verified quote of the sha256 bank gives: the attacker left those digests alone."""
    return {"sha256": replay(log, ["sha256"])["sha256"]}


def golden(banks: tuple[str, ...]) -> ReferencePolicy:
    log = parse_event_log(boot(banks))
    return capture_policy("golden", log, quoted(log))


@dataclass
class Forgery:
    """A genuine boot (changes to the lab default), the event the attacker rewrites, what it
    writes, and the preimage it would hash into a bank it controls."""

    boot: dict[str, object]
    pcr: int
    event_type: int
    contains: bytes
    data: bytes
    preimage: bytes
    policy: str  # "golden", "cmdline", "required", "secure_boot"


FORGERIES = {
    "PCR 8 command line (allow-list)": Forgery(
        {"kernel_cmdline": SHELL},
        8,
        EventType.EV_IPL,
        b"kernel_cmdline: ",
        b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b"\0",
        DEFAULT_CMDLINE.encode(),
        "cmdline",
    ),
    "PCR 8 command line (required setting)": Forgery(
        {"kernel_cmdline": DEFAULT_CMDLINE},
        8,
        EventType.EV_IPL,
        b"kernel_cmdline: ",
        b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b" lockdown=integrity\0",
        DEFAULT_CMDLINE.encode() + b" lockdown=integrity",
        "required",
    ),
    "SecureBoot variable value": Forgery(
        {"secure_boot": False},
        7,
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        "SecureBoot".encode("utf-16-le"),
        efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"),
        efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"),
        "secure_boot",
    ),
    "EV_EFI_ACTION string": Forgery(
        {},
        4,
        EventType.EV_EFI_ACTION,
        b"Calling EFI Application",
        b"Calling EFI Application from Boot Option (trusted)",
        b"Calling EFI Application from Boot Option (trusted)",
        "golden",
    ),
}


def _policy(kind: str, banks: tuple[str, ...]) -> ReferencePolicy:
    policy = golden(banks)
    if kind == "cmdline":
        return dataclasses.replace(
            policy, pcrs={}, boot_applications=(), require_secure_boot=False, quote_pcrs=(8,)
        )
    if kind == "required":
        return dataclasses.replace(
            policy,
            pcrs={},
            boot_applications=(),
            require_secure_boot=False,
            kernel_cmdlines=(),
            kernel_cmdline_required=("lockdown=integrity",),
            quote_pcrs=(8,),
        )
    if kind == "secure_boot":
        return dataclasses.replace(
            policy, pcrs={}, boot_applications=(), kernel_cmdlines=(), quote_pcrs=(7,)
        )
    return policy


def _cases() -> list[tuple[str, str, tuple[str, ...], bool]]:
    cases = []
    for name in FORGERIES:
        for bank_name, banks in BANK_SETS.items():
            cases.append((name, bank_name, banks, False))
            if len(banks) > 1:  # the attacker also rewrites the digest of a bank it controls
                cases.append((name, bank_name + ", sha1 digest rewritten to match", banks, True))
    return cases


@pytest.mark.parametrize(
    ("name", "bank_name", "banks", "one_bank"),
    _cases(),
    ids=[f"{c[0]}-{c[1]}" for c in _cases()],
)
def test_forged_data_fails_with_the_measurement_message(
    name: str, bank_name: str, banks: tuple[str, ...], one_bank: bool
) -> None:
    forgery = FORGERIES[name]
    genuine = boot(banks, **forgery.boot)
    index = find(genuine, forgery.pcr, forgery.event_type, forgery.contains)
    match = {"sha1": forgery.preimage} if one_bank else None
    log = parse_event_log(rewrite(genuine, index, forgery.data, match=match))
    policy = _policy(forgery.policy, banks)

    verdict = evaluate(policy, quoted(log), log)

    assert verdict.status == "Failed", verdict.messages
    expected = (
        f"The event data of PCR {forgery.pcr} event {index} ({EventType(forgery.event_type).name}"
    )
    forged = [m for m in verdict.messages if m.startswith(expected)]
    assert forged, verdict.messages
    assert MEASUREMENT in forged[0]
    assert "Investigate the host and reboot it" in forged[0]
    assert any(f.id == "event_data_forged" for f in verdict.findings)
    assert "FORGED" in describe(log.events[index])


def test_the_genuine_boots_pass() -> None:
    for banks in BANK_SETS.values():
        for forgery in FORGERIES.values():
            if forgery.policy == "golden":
                log = parse_event_log(boot(banks))
            elif forgery.policy == "required":
                log = parse_event_log(
                    boot(banks, kernel_cmdline=DEFAULT_CMDLINE + " lockdown=integrity")
                )
            else:
                log = parse_event_log(boot(banks))
            verdict = evaluate(_policy(forgery.policy, banks), quoted(log), log)
            assert (verdict.status, verdict.messages) == ("Passed", []), forgery


def test_the_shell_boot_itself_fails_as_before() -> None:
    log = parse_event_log(boot(("sha1", "sha256"), kernel_cmdline=SHELL))
    verdict = evaluate(_policy("cmdline", ("sha1", "sha256")), quoted(log), log)
    assert verdict.messages == [f"Kernel command line not allowed by policy: {SHELL}"]


# --- data no digest covers: shown as unverified, never decides -------------------------------


@pytest.mark.parametrize("banks", BANK_SETS.values(), ids=BANK_SETS.keys())
def test_a_rewritten_boot_application_path_is_unverified_and_decides_nothing(
    banks: tuple[str, ...],
) -> None:
    genuine = boot(banks)
    index = find(genuine, 4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"s\0h\0i\0m")
    log = parse_event_log(
        rewrite(genuine, index, image_load_event("\\EFI\\vendor\\signed-by-vendor.efi", 950_000))
    )
    assert evaluate(golden(banks), quoted(log), log).status == "Passed"
    assert describe(log.events[index]) == (
        "\\EFI\\vendor\\signed-by-vendor.efi (950000 bytes) (unverified)"
    )


def test_a_boot_application_outside_the_allow_list_names_its_path_as_unverified() -> None:
    banks = ("sha1", "sha256")
    log = parse_event_log(boot(banks, bootloader="grub-2.12-evil"))
    verdict = evaluate(golden(banks), quoted(log), log)
    digest = hashlib.sha256(b"hostseal-lab image:grub-2.12-evil").hexdigest()[:16]
    assert verdict.messages == [
        "Boot loader digest not allowed by policy: \\EFI\\debian\\grubx64.efi (path unverified) "
        f"sha256 {digest}…"
    ]


@pytest.mark.parametrize(
    "disguise",
    [EventType.EV_EFI_BOOT_SERVICES_DRIVER, EventType.EV_POST_CODE, EventType.EV_EFI_ACTION],
)
def test_a_boot_application_disguised_as_another_event_type_is_still_checked(
    disguise: EventType,
) -> None:
    """The event type is not measured either: an evil boot loader logged as a driver, a POST
    code or an action string is still code loaded into PCR 4."""
    banks = ("sha1", "sha256")
    genuine = boot(banks, bootloader="grub-2.12-evil")
    index = find(genuine, 4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION, b"g\0r\0u\0b")
    log = parse_event_log(rewrite(genuine, index, event_type=disguise))
    verdict = evaluate(golden(banks), quoted(log), log)
    assert verdict.status == "Failed", verdict.messages
    assert any("digest not allowed by policy" in m for m in verdict.messages), verdict.messages


@pytest.mark.parametrize("banks", BANK_SETS.values(), ids=BANK_SETS.keys())
def test_a_rewritten_firmware_blob_description_is_unverified_and_decides_nothing(
    banks: tuple[str, ...],
) -> None:
    genuine = boot(banks)
    index = find(genuine, 0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB)
    log = parse_event_log(rewrite(genuine, index, struct.pack("<QQ", 0xFFF00000, 0x100000)))
    assert evaluate(golden(banks), quoted(log), log).status == "Passed"
    assert describe(log.events[index]) == "firmware blob at 0xfff00000, 1048576 bytes (unverified)"
