"""Every finding has a test, and no finding is without one.

``TRIGGERS`` maps each knowledge-base id to what raises it: log lines, or a hostseal error
(made by the code that makes it in the product wherever that can run without a TPM), which the
knowledge base must explain both from the error object and from its text as the CLI prints it.
The live checks' states are covered by ``test_checks.py`` (``SCENARIOS``), and the test below
makes sure every check symptom of the knowledge base is a state a check can report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import TPM2_RC

from hostseal.attest.errors import (
    EkCertificateUntrusted,
    NonceMismatch,
    PolicyInvalid,
    QuoteEventLogMismatch,
    QuoteSignatureInvalid,
)
from hostseal.attest.policy import ReferencePolicy, capture_policy
from hostseal.attest.verdict import evaluate as judge
from hostseal.client.http import Client
from hostseal.doctor import KnowledgeBase, LogInput, scan
from hostseal.doctor.checks import REASONS
from hostseal.errors import HostsealError
from hostseal.hostinfo import no_eventlog, read_eventlog
from hostseal.lab import BootConfig, measure_boot
from hostseal.measure import (
    EventDataForged,
    EventLog,
    EventLogReplayMismatch,
    EventLogWriter,
    EventType,
    PcrMismatch,
    diff_logs,
    kernel_cmdline,
    parse_event_log,
    replay,
)
from hostseal.secureconfig import diagnose, manager
from hostseal.secureconfig.info import Requirements
from hostseal.secureconfig.recoverykey import (
    RecoveryKey,
    format_recovery_key,
    parse_recovery_id,
    parse_recovery_key,
)
from hostseal.secureconfig.requirements import exec_installed_only_problems, unmet
from hostseal.secureconfig.slots import RecoverySlot, open_recovery_slots
from hostseal.secureconfig.store import Bundle, Store
from hostseal.server.attestation import _may_attest
from hostseal.server.enrol import PENDING
from hostseal.server.errors import (
    EkNotTrusted,
    PolicyRefused,
    TpmChangeRejected,
    TpmChangeRequested,
    Unauthenticated,
)
from hostseal.settings import DEFAULT_EVENTLOG
from hostseal.tpm import parse_tcti
from hostseal.tpm.attestation import AkUnavailable
from hostseal.tpm.device import check_device, translate
from hostseal.tpm.seal import PolicyNotSatisfied


@dataclass(frozen=True)
class Lines:
    """Log text that raises the finding (``name``: the file it is read from)."""

    text: str
    name: str = "-"


@dataclass(frozen=True)
class Raised:
    """A hostseal error the finding explains: from the error (its class, its cause) and, with
    ``text``, from its message as ``hostseal`` prints it."""

    make: Callable[[], BaseException]
    text: bool = True
    error: bool = True


Trigger = Lines | Raised

DEVICE = parse_tcti("device:/dev/tpmrm0")
EK_A, EK_B = "a1" * 32, "b2" * 32


def raising(action: Callable[[], object]) -> Callable[[], BaseException]:
    def make() -> BaseException:
        try:
            action()
        except HostsealError as err:
            return err
        raise AssertionError("expected an error")

    return make


def tss(rc: int) -> Callable[[], BaseException]:
    return lambda: translate(TSS2_Exception(rc), DEVICE, "read sha256 PCRs")


def tpm12(tmp: Path) -> None:
    (tmp / "tpm0").mkdir(parents=True, exist_ok=True)
    (tmp / "tpm0" / "tpm_version_major").write_text("1\n")
    (tmp / "tpmrm0").touch()
    check_device(parse_tcti(f"device:{tmp / 'tpmrm0'}"), tmp)


def secure_boot_off_lines() -> str:
    on, _ = measure_boot(BootConfig(), ("sha256",))
    off, _ = measure_boot(BootConfig(secure_boot=False), ("sha256",))
    boot = parse_event_log(off)
    lines = [
        f"  - {p.reason}, but this configuration requires it."
        for p in unmet(Requirements(require_secure_boot=True), boot)
    ]
    lines += [f"  - {c.message}" for c in diff_logs(parse_event_log(on), boot)]
    return "\n".join(lines)


def verdict(**changes: object) -> str:
    """The messages of the attestation verdict for a boot with ``changes``, judged by a policy
    captured from the lab's default boot (as the service shows them)."""
    good = parse_event_log(measure_boot(BootConfig(), ("sha256",))[0])
    policy = capture_policy("golden", good, replay(good))
    boot = parse_event_log(measure_boot(BootConfig(**changes), ("sha256",))[0])  # type: ignore[arg-type]
    result = judge(policy, replay(boot), boot)
    assert result.status == "Failed"
    return "\n".join(result.messages)


def _forged_boot() -> EventLog:
    """A boot with init=/bin/sh whose PCR 8 event text was rewritten, digests untouched."""
    writer = EventLogWriter(banks=("sha256",))
    text = b"BOOT_IMAGE=/boot/vmlinuz-6.1.0-lab init=/bin/sh"
    writer.add(8, EventType.EV_IPL, b"kernel_cmdline: ro quiet\0", digest_data=text)
    return parse_event_log(writer.to_bytes())


def forged_verdict() -> str:
    """The verdict's messages for the forged boot, under a command-line policy."""
    boot = _forged_boot()
    policy = ReferencePolicy("cmdline", kernel_cmdlines=("ro quiet",), quote_pcrs=(8,))
    result = judge(policy, replay(boot), boot)
    assert result.status == "Failed"
    return "\n".join(result.messages)


def forged_cmdline() -> BaseException:
    try:
        kernel_cmdline(_forged_boot())
    except EventDataForged as err:
        return err
    raise AssertionError("a forged command line was read")


def not_trusted(status: str) -> Callable[[], BaseException]:
    host = SimpleNamespace(name="esx7", status=status, new_ek_fingerprint="c3" * 32)
    return raising(lambda: _may_attest(host))  # type: ignore[arg-type]


def policy_failed() -> BaseException:
    bundle: Any = SimpleNamespace(
        info=SimpleNamespace(
            seal_boot_summary={"sealed_pcr_values": {"8": "00" * 32}},
            requirements=Requirements(),
        ),
        extras={},
    )
    return diagnose.policy_failed(bundle, {8: b"\x11" * 32}, None)


def wrong_key() -> None:
    data_key = b"k" * 32
    slot = RecoverySlot.create(data_key, RecoveryKey.generate())
    open_recovery_slots([slot], RecoveryKey.generate().secret)


def typo() -> None:
    key = format_recovery_key(RecoveryKey.generate().secret)
    group = key.split("-")[3]
    wrong = f"{(int(group) + 1) % 1_000_000:06d}"
    parse_recovery_key(key.replace(group, wrong, 1))


def unreachable() -> None:
    client = Client("https://127.0.0.1:9", None, False)
    try:
        client.call("POST", "/v1/attest/challenge", body={})
    finally:
        client.close()


def mismatch(cls: type[EventLogReplayMismatch]) -> Callable[[], BaseException]:
    return lambda: cls([PcrMismatch("sha256", 7, b"\x01" * 32, b"\x02" * 32, ())])


TMP = Path("/nonexistent-hostseal-bootbank")

TRIGGERS: dict[str, list[Trigger]] = {
    # -- ESXi and vCenter ------------------------------------------------------------------
    "sha256-bank-inactive": [
        Lines(
            "2023-07-04T08:15:30.123Z cpu0:2097153)WARNING: tpmDriver: TpmDriverInitImpl:532: "
            "TPM 2 SHA-256 PCR bank not found to be active.",
            "vmkwarning.log",
        ),
        Lines("Problem: SHA-256 PCR bank not active (active banks: sha1).", "hostseal.txt"),
    ],
    "esxi-tpm-connection-failed": [
        Lines("TPM 2.0 device detected, but a connection cannot be established."),
        Lines(
            "2023-07-04T08:15:30Z cpu9:2097931)WARNING: Elf: 3110: Kernel-based module load "
            "of tpmdriver failed: Failure <Mod_LoadDone failed>",
            "vmkernel.log",
        ),
    ],
    "txt-enabled": [
        Lines(
            "2019-01-02T03:04:05.678Z cpu40:2100000)tpmDriver: Tpm2ResMgrProcessResponse:851: "
            "Error: TPM command error code 0x18b",
            "vmkernel.log",
        )
    ],
    "esxi-tpm-not-responding": [
        Lines("tpmDriver: Tpm_Transmit:1203: Send to TPM failed: Failure (0xbad0001)")
    ],
    "esxi-encryption-policy-unreadable": [Lines("Unable to get the encryption mode and policy.")],
    "encryption-policy-change-refused": [
        Lines(
            "Unable to change the encryption mode and policy. Verify that the current host "
            "configuration can satisfy the new requirement."
        ),
        Raised(
            lambda: manager.PolicyChangeRefused(
                f"{manager.CHANGE_REFUSED}: exec-installed-only requires Secure Boot.",
                "Keep --require-secure-boot.",
            )
        ),
    ],
    "esxi-tpm-interface-not-2.0": [
        Lines(
            "tpmDriver: Tpm2CheckInterface:720: TPM does not appear to be speaking the 2.0 "
            "protocol (interfaceType = 0x3)."
        )
    ],
    "esxi-tpm-crb-unsupported": [
        Lines("2023-11-11T11:11:11Z In(182) vmkernel: VMB_TPM: 101: Unsupported 'startMethod': 7")
    ],
    "esxi-ek-certificate-missing": [
        Lines(
            "Unable to provision Endorsement Key on TPM 2.0 device: No RSA Endorsement Key "
            "certificate found in TPM 2.0 device's non-volatile memory."
        )
    ],
    "esxi-ek-certificate-unreadable": [
        Lines(
            "2024-02-02T02:02:02.222Z error hostd[2100999] [Originator@6876 "
            "sub=Hostsvc.Tpm20Provider] Unable to provision default rsa endorsement key.",
            "hostd.log",
        )
    ],
    "esxi-ek-creation-failed": [
        Lines(
            "Unable to provision Endorsement Key on TPM 2.0 device: Endorsement Key creation "
            "failed on the device"
        )
    ],
    "secure-boot-disabled": [
        Lines("Host Secure Boot was disabled", "vpxd.log"),
        Lines(verdict(secure_boot=False), "hostseal-server.log"),
    ],
    "security-violation": [
        Lines(
            "Unable to restore system configuration. A security violation was detected. "
            "https://via.vmw.com/security-violation",
            "psod.txt",
        ),
        Raised(lambda: diagnose.violation(["Something new happened."], "Do this.", cause="new")),
    ],
    "esxi-config-decryption-failed": [
        Lines("Failed to decrypt system configuration.https://via.vmw.com/config-decryption-failed")
    ],
    "esxi-config-recovery-failed": [
        Lines("Unable to recover the system configuration.https://via.vmw.com/recovery-failed")
    ],
    "attestation-no-identity-key": [
        Lines(
            "2020-01-01T00:00:00.000Z warning vpxd[07777] [Originator@6876 sub=Attestation] "
            "Failed to update integrity report; [vim.HostSystem:host-42,esx42.example.org], "
            "N7Vmacore9ExceptionE(No identity key in DB, try to reconnect host)"
        )
    ],
    "attestation-ek-changed": [
        Lines("The new host TPM endorsement key doesn't match the one stored in the DB"),
        Raised(
            lambda: TpmChangeRequested(
                "Host 'esx1' is enrolled with another TPM (EK fingerprint aa); this TPM (EK "
                "fingerprint bb) is not enrolled. It is kept as TPM change request 3 for an "
                "operator to decide.",
                "An operator runs 'hostseal host accept-tpm esx1 --request 3 --reason ...'.",
            ),
            False,
        ),
        Raised(lambda: TpmChangeRejected("Rejected.", "Ask the operators."), False),
    ],
    "recovery-key-not-escrowed": [
        Lines(
            "2024-01-01T00:00:00.000Z info vpxd[1] [Originator@6876 sub=Alarm] Alarm 'TPM "
            "Encryption Recovery Key Backup' on esx01.example.org changed from Gray to Yellow"
        )
    ],
    # -- hostseal's own messages --------------------------------------------------------------
    "violation-tpm-replaced": [Raised(lambda: diagnose.wrong_tpm(EK_A, EK_B))],
    "violation-tpm-cleared": [Raised(lambda: diagnose.wrong_tpm(EK_A, EK_A))],
    "violation-secure-boot-off": [Lines(secure_boot_off_lines(), "hostseal-unlock.log")],
    "violation-pcr-policy": [
        Raised(policy_failed),
        Raised(lambda: PolicyNotSatisfied("The TPM refused.", "Unlock with a key."), False),
    ],
    "exec-installed-only-unmet": [
        Lines("  - " + exec_installed_only_problems("BOOT_IMAGE=/vmlinuz ro quiet")[0]),
        Raised(lambda: diagnose.violation(["x"], "y", cause="requirements"), False),
    ],
    "violation-tpm-unavailable": [
        Raised(lambda: diagnose.no_tpm("No TPM answered at swtpm:host=127.0.0.1,port=1"))
    ],
    "tpm-unavailable": [
        Raised(raising(lambda: check_device(parse_tcti("device:/nonexistent/tpmrm0"))))
    ],
    "tpm-busy": [Raised(tss(int(TPM2_RC.RETRY)))],
    "tpm-lockout": [Raised(tss(int(TPM2_RC.LOCKOUT)))],
    "tpm-command-failed": [Raised(tss(0x101))],
    "tpm-1.2": [Raised(raising(lambda: tpm12(Path("/tmp/hostseal-doctor-sysfs"))))],
    "recovery-key-wrong": [Raised(raising(wrong_key))],
    "recovery-key-mistyped": [
        Raised(raising(typo)),
        Raised(raising(lambda: parse_recovery_key("123456-789"))),
        Raised(raising(lambda: parse_recovery_id("not-a-guid"))),
    ],
    "no-recovery-key": [
        # The same class as a wrong key (recovery-key-wrong): told apart by the message.
        Raised(raising(lambda: open_recovery_slots([], RecoveryKey.generate().secret)), error=False)
    ],
    "mode-none": [Lines(f"Note: {manager.OBFUSCATION_NOTICE}")],
    "secure-boot-not-enforced": [
        Lines(
            "Note: Secure Boot is off, so it is not required: the key is bound to this TPM "
            "only. Turn Secure Boot on, then: hostseal config set --require-secure-boot."
        )
    ],
    "eventlog-mismatch": [Raised(mismatch(EventLogReplayMismatch))],
    "eventlog-unreadable": [Raised(raising(lambda: parse_event_log(b"garbage" * 10)))],
    "eventlog-absent": [
        Raised(raising(lambda: read_eventlog(TMP / "binary_bios_measurements"))),
        Raised(lambda: no_eventlog(DEFAULT_EVENTLOG)),  # the kernel's: the firmware left none
    ],
    "bundle-corrupt": [Raised(raising(lambda: Bundle.parse(b"not a gzip file")))],
    "no-bundle": [Raised(raising(lambda: Store(TMP).load()))],
    "backup-bound-to-other-tpm": [
        Raised(
            lambda: manager.BackupBoundToOtherTpm(
                "This backup is sealed to a TPM that will not release its key here: it is not "
                "the TPM the configuration was sealed to.",
                "Restore it with a recovery key.",
            ),
            False,
        )
    ],
    "recovery-key-used": [
        Lines(
            "Note: The configuration is sealed to this host's TPM again. The recovery key was "
            "used: rotate it now (hostseal recovery rotate) and save the new one."
        )
    ],
    "rescue-not-resealed": [
        Lines(
            "Note: Decrypted for rescue with the recovery key, but NOT sealed again: Secure "
            "Boot is disabled on this boot."
        )
    ],
    # -- attestation --------------------------------------------------------------------------
    "attestation-evidence-invalid": [
        Raised(mismatch(QuoteEventLogMismatch)),
        Raised(lambda: NonceMismatch("The quote's nonce is not ours.", "Attest again."), False),
        Raised(lambda: QuoteSignatureInvalid("Bad signature.", "Attest again."), False),
    ],
    "attestation-policy-mismatch": [
        Lines(verdict(kernel="vmlinuz-6.9.0-unknown"), "hostseal-server.log"),
        Lines(verdict(kernel_cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-lab init=/bin/sh")),
    ],
    "eventlog-data-forged": [
        Lines(forged_verdict(), "hostseal-server.log"),
        Raised(forged_cmdline),
    ],
    "attestation-alarm": [Lines("Host TPM attestation alarm")],
    "attestation-ek-untrusted": [
        Raised(not_trusted(PENDING), error=False),
        Raised(
            lambda: EkCertificateUntrusted("No issuer.", "Add the CA.", reason="no_issuer"), False
        ),
        Raised(lambda: EkNotTrusted("Not trusted.", "Approve it."), False),
    ],
    "attestation-policy-refused": [
        Raised(lambda: PolicyInvalid("Empty policy.", "Give PCRs.", field="pcrs"), False),
        Raised(lambda: PolicyRefused("Accepts everything.", "Give PCRs."), False),
    ],
    "attestation-service-unreachable": [Raised(raising(unreachable))],
    "agent-not-enrolled": [Raised(lambda: Unauthenticated("Unknown token.", "Enrol."), False)],
    "agent-ak-unavailable": [
        Lines(
            "2025-02-03 04:05:06,789 hostseal.agent the AK no longer loads (TPM replaced or "
            "cleared): enrolling again"
        ),
        Raised(
            lambda: AkUnavailable(
                "The attestation key does not load in this TPM: the TPM was replaced or cleared "
                "since the host enrolled.",
                "The agent enrols again.",
            )
        ),
    ],
}


def test_every_finding_has_a_trigger_and_no_trigger_is_stale(kb: KnowledgeBase) -> None:
    assert sorted(TRIGGERS) == sorted(kb.ids)


def printed(err: BaseException) -> str:
    """The error as ``hostseal`` prints it (cli.main._report)."""
    assert isinstance(err, HostsealError)
    return f"Error: {err.message}\nWhat to do: {err.remedy}\n"


CASES = [
    pytest.param(finding_id, trigger, id=f"{finding_id}-{i}")
    for finding_id, triggers in TRIGGERS.items()
    for i, trigger in enumerate(triggers)
]


@pytest.mark.parametrize(("finding_id", "trigger"), CASES)
def test_trigger_raises_its_finding(kb: KnowledgeBase, finding_id: str, trigger: Trigger) -> None:
    if isinstance(trigger, Lines):
        found = [f.finding.id for f in scan([LogInput(trigger.name, trigger.text)], kb)]
        assert finding_id in found, found
        return
    err = trigger.make()
    if trigger.error:
        explained = kb.for_error(err)
        assert explained is not None and explained.id == finding_id, (type(err), explained)
    if trigger.text:
        found = [f.finding.id for f in scan([LogInput("hostseal.log", printed(err))], kb)]
        assert finding_id in found, (printed(err), found)


def test_every_check_symptom_is_a_state_a_check_reports(kb: KnowledgeBase) -> None:
    reportable = {
        (check, state, reason)
        for check, states in REASONS.items()
        for state, reasons in states.items()
        for reason in reasons
    }
    for entry in kb.entries.values():
        for sig in entry.checks:
            general = any(c == sig.check and s == sig.state for c, s, _ in reportable)
            assert (sig.check, sig.state, sig.reason) in reportable or (
                sig.reason is None and general
            ), (entry.id, sig)
    for check, state, reason in reportable:
        assert kb.for_check(check, state, reason) is not None, (check, state, reason)
