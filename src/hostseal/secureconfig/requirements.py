"""Requirements of a sealed configuration and how they are checked against the measured boot.

**Require Secure Boot**: the measured boot's SecureBoot variable (PCR 7) is 1. The data key is
sealed to PCR 7, so turning Secure Boot off, or changing PK/KEK/db/dbx, stops the TPM from
releasing it.

**Require exec-installed-only** (ESXi's ``execInstalledOnly``, on Linux): only code that came
signed with the installed system may run. hostseal checks the *measured* kernel command line
(the one GRUB measured into PCR 8, or systemd-stub into PCR 12, authenticated by replaying the
event log against the TPM) for all of:

* ``lockdown=integrity`` or ``lockdown=confidentiality`` -- kernel lockdown: only signed kernel
  modules load, no /dev/mem, no unsigned kexec;
* ``ima_appraise=enforce`` -- IMA appraisal refuses files whose signature does not verify;
* ``ima_policy=`` including ``appraise_tcb`` -- executables, libraries and modules are appraised.

It requires Secure Boot (without it the kernel and its command line could be anything), and the
data key is then sealed to the command line's PCR as well, so booting without those settings
stops the TPM from releasing it.

**Default PCR set**: PCR 7 when Secure Boot is required; PCR 7 and the command line's PCR when
exec-installed-only is required; no PCR (the key is bound to this TPM only) when nothing is
required. Firmware code (PCR 0, 2) and boot applications (PCR 4) are left out on purpose: they
change with every firmware or boot-loader update, which would turn routine patching into a
security violation; Secure Boot (PCR 7) already decides which boot applications may run.

Pure: an event log (parsed) in, the unmet requirements out.
"""

from __future__ import annotations

from dataclasses import dataclass

from hostseal.measure import EventDataForged, EventLog, kernel_cmdline, secure_boot_state
from hostseal.measure.decode import cmdline_of
from hostseal.secureconfig.info import Requirements

SECURE_BOOT_PCR = 7
DEFAULT_CMDLINE_PCR = 8


@dataclass(frozen=True)
class Unmet:
    """A requirement the measured boot does not meet, with what to do."""

    requirement: str
    reason: str
    remedy: str


def cmdline_settings(cmdline: str) -> dict[str, str]:
    """``key=value`` words of a kernel command line (the last one wins, as in the kernel)."""
    settings: dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        settings[key] = value
    return settings


def exec_installed_only_problems(cmdline: str | None) -> list[str]:
    """What the kernel command line lacks for exec-installed-only (empty list: nothing)."""
    if cmdline is None:
        return ["the event log has no measured kernel command line"]
    settings = cmdline_settings(cmdline)
    missing = []
    if settings.get("lockdown") not in ("integrity", "confidentiality"):
        missing.append("lockdown=integrity (or confidentiality)")
    if settings.get("ima_appraise") != "enforce":
        missing.append("ima_appraise=enforce")
    if "appraise_tcb" not in settings.get("ima_policy", "").split("|"):
        missing.append("ima_policy=appraise_tcb")
    if missing:
        return [f"the measured kernel command line lacks {', '.join(missing)}"]
    return []


def unmet(requirements: Requirements, log: EventLog) -> list[Unmet]:
    """The requirements this measured boot does not meet."""
    problems: list[Unmet] = []
    secure_boot = secure_boot_state(log, allow_empty=True)
    if (requirements.require_secure_boot or requirements.require_exec_installed_only) and (
        secure_boot is not True
    ):
        state = "disabled" if secure_boot is False else "not measured"
        problems.append(
            Unmet(
                "secure-boot",
                f"Secure Boot is {state} on this boot",
                "Turn Secure Boot on in the firmware setup and reboot",
            )
        )
    if requirements.require_exec_installed_only:
        try:
            reasons = exec_installed_only_problems(kernel_cmdline(log))
        except EventDataForged as err:  # the text was rewritten: it proves nothing
            reasons = [err.message.rstrip(".")]
        for reason in reasons:
            problems.append(
                Unmet(
                    "exec-installed-only",
                    reason,
                    "Add lockdown=integrity ima_appraise=enforce ima_policy=appraise_tcb to the "
                    "kernel command line (GRUB_CMDLINE_LINUX), update-grub, and reboot",
                )
            )
    return problems


def kernel_cmdline_pcr(log: EventLog) -> int | None:
    """The PCR the kernel command line was measured into (GRUB: 8, systemd-stub: 12)."""
    pcr = None
    for event in log.events:
        if cmdline_of(event) is not None:
            pcr = event.pcr
    return pcr


def policy_pcrs(requirements: Requirements, log: EventLog) -> list[int]:
    """The PCRs the data key is sealed to for these requirements (see the module docstring)."""
    pcrs: set[int] = set()
    if requirements.require_secure_boot or requirements.require_exec_installed_only:
        pcrs.add(SECURE_BOOT_PCR)
    if requirements.require_exec_installed_only:
        pcrs.add(kernel_cmdline_pcr(log) or DEFAULT_CMDLINE_PCR)
    return sorted(pcrs)
