"""Verdicts with vSphere-style messages: scenario tables over boots of the lab firmware, real
corpus logs, and a lab host whose PCRs are read from its TPM."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.attest.policy import ReferencePolicy, capture_policy
from hostseal.attest.verdict import PCR_MEANINGS, Verdict, evaluate
from hostseal.lab.firmware import DEFAULT_CMDLINE, BootConfig, measure_boot
from hostseal.measure import EventLog, parse_event_log, replay, verify_pcrs
from hostseal.tpm import open_tpm

KEYLIME_LOGS = "keylime/test/data/create-mb-policy"
Pcrs = dict[str, dict[int, bytes]]


def lab_boot(**changes: object) -> tuple[EventLog, Pcrs]:
    """The lab firmware's log of a boot and its PCR values (what a verified quote gives)."""
    raw, _ = measure_boot(BootConfig().with_changes(**changes), ("sha1", "sha256"))
    log = parse_event_log(raw)
    return log, replay(log)


def image(name: str) -> str:
    """The short digest the lab firmware gives a simulated image (see hostseal.lab.firmware)."""
    return hashlib.sha256(b"hostseal-lab image:" + name.encode()).hexdigest()[:16] + "…"


GOLDEN = capture_policy("lab-golden", *lab_boot())
SB_OFF = "Host secure boot was disabled"


def _pcr_only(policy: ReferencePolicy) -> ReferencePolicy:
    return dataclasses.replace(
        policy,
        boot_applications=(),
        require_secure_boot=False,
        kernel_cmdlines=(),
        quote_pcrs=(0, 2, 7),
    )


def _require(*settings: str) -> Callable[[ReferencePolicy], ReferencePolicy]:
    def change(policy: ReferencePolicy) -> ReferencePolicy:
        return dataclasses.replace(policy, kernel_cmdlines=(), kernel_cmdline_required=settings)

    return change


@dataclass
class Scenario:
    """A boot (changes to the lab's default boot) judged by the golden policy (or a variant)."""

    boot: dict[str, object]
    status: str
    messages: list[str]
    ids: list[str] = field(default_factory=list)
    policy: Callable[[ReferencePolicy], ReferencePolicy] | None = None
    eventlog: bool = True
    unquoted: tuple[int, ...] = ()  # PCRs left out of the evidence


SCENARIOS = {
    "the golden boot itself": Scenario({}, "Passed", []),
    "Secure Boot turned off": Scenario(
        {"secure_boot": False},
        "Failed",
        [SB_OFF, "PCR 7 does not match the policy (Secure Boot policy changed)"],
        ["secure_boot_disabled", "pcr_mismatch"],
    ),
    "another boot loader": Scenario(
        {"bootloader": "grub-2.12-evil"},
        "Failed",
        [
            "Boot loader digest not allowed by policy: \\EFI\\debian\\grubx64.efi "
            "(path unverified) sha256 " + image("grub-2.12-evil")
        ],
        ["boot_application_not_allowed"],
    ),
    "another shim": Scenario(
        {"shim": "shim-15.7"},
        "Failed",
        [
            "Boot loader digest not allowed by policy: \\EFI\\debian\\shimx64.efi "
            "(path unverified) sha256 " + image("shim-15.7")
        ],
    ),
    "another kernel": Scenario(
        {"kernel": "vmlinuz-6.1.0-rootkit"},
        "Failed",
        [
            "Kernel image digest not allowed by policy: \\vmlinuz (path unverified) sha256 "
            + image("vmlinuz-6.1.0-rootkit")
        ],
    ),
    "kernel command line with init=/bin/sh": Scenario(
        {"kernel_cmdline": DEFAULT_CMDLINE + " init=/bin/sh"},
        "Failed",
        [f"Kernel command line not allowed by policy: {DEFAULT_CMDLINE} init=/bin/sh"],
        ["kernel_cmdline_not_allowed"],
    ),
    "firmware update": Scenario(
        {"firmware": "hostseal-lab-firmware 1.1"},
        "Failed",
        ["PCR 0 does not match the policy (firmware changed)"],
        ["pcr_mismatch"],
    ),
    "new db": Scenario(
        {"db": "lab-db-2025"},
        "Failed",
        ["PCR 7 does not match the policy (Secure Boot policy changed)"],
    ),
    "several changes at once": Scenario(
        {"secure_boot": False, "bootloader": "grub-evil", "firmware": "fw 2"},
        "Failed",
        [
            SB_OFF,
            "Boot loader digest not allowed by policy: \\EFI\\debian\\grubx64.efi "
            "(path unverified) sha256 " + image("grub-evil"),
            "PCR 0 does not match the policy (firmware changed)",
            "PCR 7 does not match the policy (Secure Boot policy changed)",
        ],
        ["secure_boot_disabled", "boot_application_not_allowed", "pcr_mismatch", "pcr_mismatch"],
    ),
    "no event log, PCR-only policy": Scenario(
        {},
        "Warning",
        ["No event log was presented: only PCR values were checked"],
        ["no_event_log"],
        policy=_pcr_only,
        eventlog=False,
    ),
    "no event log, PCR-only policy, firmware changed": Scenario(
        {"firmware": "fw 2"},
        "Failed",
        [
            "No event log was presented: only PCR values were checked",
            "PCR 0 does not match the policy (firmware changed)",
        ],
        policy=_pcr_only,
        eventlog=False,
    ),
    "no event log, golden policy": Scenario(
        {},
        "Failed",
        [
            "No event log was presented: only PCR values were checked",
            "Secure Boot state could not be checked: no event log was presented",
            "Boot applications could not be checked: no event log was presented",
            "Kernel command line could not be checked: no event log was presented",
        ],
        [
            "no_event_log",
            "secure_boot_unknown",
            "boot_applications_unknown",
            "kernel_cmdline_unknown",
        ],
        eventlog=False,
    ),
    "PCR 4 and 7 left out of the quote": Scenario(
        {"secure_boot": False, "bootloader": "grub-evil"},
        "Failed",
        ["The attestation does not include sha256 PCRs 4, 7 required by the policy"],
        ["pcr_not_quoted"],
        unquoted=(4, 7),
    ),
    "a required setting is missing": Scenario(
        {},
        "Failed",
        [f"Kernel command line lacks required setting lockdown=integrity: {DEFAULT_CMDLINE}"],
        ["kernel_cmdline_missing_setting"],
        policy=_require("lockdown=integrity", "ro"),
    ),
    "required settings present": Scenario(
        {"kernel_cmdline": DEFAULT_CMDLINE + " lockdown=integrity"},
        "Passed",
        [],
        policy=_require("lockdown=integrity", "ro"),
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_lab_boot_scenarios(name: str) -> None:
    case = SCENARIOS[name]
    policy = case.policy(GOLDEN) if case.policy else GOLDEN
    log, pcrs = lab_boot(**case.boot)
    evidence = {
        bank: {p: v for p, v in values.items() if p not in case.unquoted}
        for bank, values in pcrs.items()
    }
    verdict = evaluate(policy, evidence, log if case.eventlog else None)
    assert (verdict.status, verdict.messages) == (case.status, case.messages)
    if case.ids:
        assert [f.id for f in verdict.findings] == case.ids
    assert verdict.passed is (case.status == "Passed")
    assert verdict.to_dict()["messages"] == case.messages


def test_finding_details_for_programs() -> None:
    log, pcrs = lab_boot(firmware="fw 2", bootloader="grub-evil")
    verdict = evaluate(GOLDEN, pcrs, log)
    app, pcr0 = verdict.findings
    assert app.to_dict() == {
        "id": "boot_application_not_allowed",
        "severity": "failure",
        "message": app.message,
        "pcr": 4,
        "details": {
            "path": "\\EFI\\debian\\grubx64.efi",
            "sha256": hashlib.sha256(b"hostseal-lab image:grub-evil").hexdigest(),
            "event": app.details["event"],
        },
    }
    assert pcr0.pcr == 0 and pcr0.details["expected"] == GOLDEN.pcrs["sha256"][0].hex()
    assert pcr0.details["actual"] == pcrs["sha256"][0].hex()
    assert verdict.to_dict()["policy"] == "lab-golden"


def test_every_boot_pcr_has_a_meaning() -> None:
    for pcr in (0, 1, 2, 4, 5, 7, 8, 9, 12, 14):
        assert PCR_MEANINGS[pcr]
    assert PCR_MEANINGS[14] == "MOK changed"


def test_events_of_unquoted_pcrs_are_not_trusted() -> None:
    """A log may claim anything about a PCR the quote does not cover: the GRUB command line
    (PCR 8) does not count for a policy that quotes only PCR 12."""
    log, pcrs = lab_boot()
    only_12 = ReferencePolicy("cmdline", kernel_cmdlines=(DEFAULT_CMDLINE,), quote_pcrs=(12,))
    verdict = evaluate(only_12, {"sha256": {12: bytes(32)}}, log)
    assert verdict.messages == ["Kernel command line is not in the event log (PCR 8 or 12)"]
    assert [f.id for f in verdict.findings] == ["kernel_cmdline_unknown"]
    quoted_8 = dataclasses.replace(only_12, quote_pcrs=(8,))
    assert evaluate(quoted_8, pcrs, log).status == "Passed"


# --- real logs -------------------------------------------------------------------------------


def corpus_log(corpus: Path, name: str) -> tuple[EventLog, Pcrs]:
    log = parse_event_log((corpus / name).read_bytes())
    return log, replay(log)


@pytest.mark.corpus
def test_keylime_secure_boot_off_fails_a_secure_boot_on_policy(corpus: Path) -> None:
    policy = capture_policy(
        "rhel9-sb", *corpus_log(corpus, f"{KEYLIME_LOGS}/binary_bios_measurements-secureboot")
    )
    log, pcrs = corpus_log(corpus, f"{KEYLIME_LOGS}/binary_bios_measurements")
    verdict = evaluate(policy, pcrs, log)
    assert verdict.status == "Failed"
    assert verdict.messages[0] == SB_OFF
    assert [f.id for f in verdict.findings] == [
        "secure_boot_disabled",
        *["boot_application_not_allowed"] * 3,
        "kernel_cmdline_not_allowed",
        "pcr_mismatch",
        "pcr_mismatch",
        "pcr_mismatch",
    ]
    assert (
        "Boot loader digest not allowed by policy: \\EFI\\fedora\\grubx64.efi "
        "(path unverified) sha256 " in "\n".join(verdict.messages)
    )
    assert verdict.messages[-3:] == [
        "PCR 0 does not match the policy (firmware changed)",
        "PCR 2 does not match the policy (option ROMs changed)",
        "PCR 7 does not match the policy (Secure Boot policy changed)",
    ]


@pytest.mark.corpus
@pytest.mark.parametrize(
    "name",
    [
        f"{KEYLIME_LOGS}/binary_bios_measurements-secureboot",
        f"{KEYLIME_LOGS}/binary_bios_measurements",
        "go-tpm-tools/internal/test/eventlogs/rhel8-uefi.bin",
        "go-tpm-tools/internal/test/eventlogs/ubuntu-2104-no-secure-boot.bin",
    ],
)
def test_a_captured_policy_passes_its_own_boot(corpus: Path, name: str) -> None:
    log, pcrs = corpus_log(corpus, name)
    verdict = evaluate(capture_policy("golden", log, pcrs), pcrs, log)
    assert (verdict.status, verdict.messages) == ("Passed", [])


@pytest.mark.corpus
def test_unreadable_secure_boot_state(corpus: Path) -> None:
    """go-tpm-tools' Arch Linux workstation logs SecureBoot without its value."""
    log, pcrs = corpus_log(
        corpus, "go-tpm-tools/internal/test/eventlogs/arch-linux-workstation.bin"
    )
    policy = ReferencePolicy("sb", require_secure_boot=True, quote_pcrs=(7,))
    verdict = evaluate(policy, pcrs, log)
    assert verdict.status == "Failed"
    assert [f.id for f in verdict.findings] == ["secure_boot_unknown"]
    assert verdict.messages[0].startswith(
        "Secure Boot state could not be read from the event log: Event log: event 3 at offset "
        "245 (0xf5): the SecureBoot variable is logged with 0 bytes of data"
    )


@pytest.mark.corpus
def test_sha1_only_log_cannot_show_boot_application_digests(corpus: Path) -> None:
    log, pcrs = corpus_log(corpus, "go-attestation/derived_windows_gcp_shielded_vm.eventlog.bin")
    policy = ReferencePolicy(
        "windows",
        boot_applications=GOLDEN.boot_applications,
        require_secure_boot=True,
        quote_bank="sha1",
        quote_pcrs=(4, 7),
    )
    verdict = evaluate(policy, pcrs, log)
    assert verdict.messages == [
        "Boot applications could not be checked: the event log has no SHA-256 digests"
    ]


# --- a lab host: PCRs from its TPM -----------------------------------------------------------


def evidence(host: lab.LabHost) -> tuple[EventLog, Pcrs]:
    """The host's event log and the PCRs its TPM holds; the log is checked against them (what
    quote verification does before a verdict)."""
    log = parse_event_log(host.eventlog.read_bytes())
    with open_tpm(host.tcti) as tpm:
        pcrs = {"sha256": tpm.pcr_read("sha256", list(range(24)))}
    verify_pcrs(log, pcrs)
    return log, pcrs


LAB_HOST_CASES = [
    (BootConfig(), "Passed", []),
    (
        BootConfig(secure_boot=False),
        "Failed",
        [SB_OFF, "PCR 7 does not match the policy (Secure Boot policy changed)"],
    ),
    (
        BootConfig(bootloader="grub-2.12-untrusted"),
        "Failed",
        [
            "Boot loader digest not allowed by policy: \\EFI\\debian\\grubx64.efi "
            "(path unverified) sha256 " + image("grub-2.12-untrusted")
        ],
    ),
    (
        BootConfig(kernel_cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-lab root=/dev/vda1 rw single"),
        "Failed",
        [
            "Kernel command line not allowed by policy: "
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-lab root=/dev/vda1 rw single"
        ],
    ),
]


@pytest.mark.swtpm
def test_lab_host_reboots(lab_dir: Path) -> None:
    host = lab.start(lab_dir, "attested")
    policy = capture_policy("lab-host", *evidence(host))
    for boot, status, messages in LAB_HOST_CASES:
        host = lab.reboot(lab_dir, "attested", boot)
        log, pcrs = evidence(host)
        verdict: Verdict = evaluate(policy, pcrs, log)
        assert (verdict.status, verdict.messages) == (status, messages), boot
