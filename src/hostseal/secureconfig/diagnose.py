"""Why the TPM would not release the key: the security violation, explained.

Compares what was recorded at seal time (the TPM's identity, the sealed PCR values, the event
log of that boot) with this boot, and says in plain words what changed and what to do.

Pure: values in (what was recorded, what this boot measured), an error out.
"""

from __future__ import annotations

from hostseal.errors import SecurityViolation
from hostseal.measure import EventLog, EventLogError, diff_logs, parse_event_log
from hostseal.secureconfig.bundle_file import SEAL_EVENTLOG_MEMBER
from hostseal.secureconfig.requirements import unmet
from hostseal.secureconfig.store import Bundle

HEADLINE = "Unable to restore the system configuration. A security violation was detected."
RECOVERY = (
    "unlock with a recovery key: hostseal config unlock --to DIR --recovery-key-file FILE "
    "(the configuration is then sealed to this TPM again)"
)


def _short(fingerprint: str) -> str:
    return fingerprint[:16]


def violation(causes: list[str], remedy: str, **details: object) -> SecurityViolation:
    message = HEADLINE + "".join(f"\n  - {cause}" for cause in causes)
    return SecurityViolation(message, remedy, {"causes": causes, **details})


def no_tpm(reason: str) -> SecurityViolation:
    return violation(
        [
            f"No TPM is available ({reason}): it is missing, disabled in the firmware setup, or "
            "not reachable."
        ],
        "Enable the TPM in the firmware setup; if it was removed or replaced, " + RECOVERY + ".",
        cause="tpm-unavailable",
    )


def wrong_tpm(sealed_ek: str, current_ek: str) -> SecurityViolation:
    if sealed_ek == current_ek:
        return violation(
            [
                "The TPM was cleared since the configuration was sealed: it has the same "
                "endorsement key but a new storage seed, so the sealed key no longer loads."
            ],
            "Do not clear the TPM of a host with a sealed configuration; now " + RECOVERY + ".",
            cause="tpm-cleared",
        )
    return violation(
        [
            f"This is not the TPM the configuration was sealed to: sealed to the TPM with "
            f"endorsement key {_short(sealed_ek)}…, this host's TPM is {_short(current_ek)}… "
            "(the TPM or the system board was replaced, or the disk was moved to another host)."
        ],
        "If this host's TPM or system board was replaced, " + RECOVERY + ". A disk moved "
        "from another host belongs back in that host.",
        cause="tpm-replaced",
        sealed_ek=sealed_ek,
        current_ek=current_ek,
    )


def policy_failed(
    bundle: Bundle,
    current_values: dict[int, bytes],
    boot: EventLog | None,
    efivars_secure_boot: bool | None = None,
) -> SecurityViolation:
    """The sealed key loads but the PCRs are not the sealed values: name PCRs and events.

    Without this boot's event log, the changed PCRs are named from their values, and Secure
    Boot's state from the UEFI variable (``efivars_secure_boot``) when it is known."""
    summary = bundle.info.seal_boot_summary
    sealed_values = {
        int(pcr): bytes.fromhex(str(value))
        for pcr, value in dict(summary.get("sealed_pcr_values", {})).items()
    }
    changed = sorted(p for p, v in sealed_values.items() if current_values.get(p) != v)
    causes: list[str] = []
    changes: list[dict[str, object]] = []
    if boot is not None:
        for problem in unmet(bundle.info.requirements, boot):
            causes.append(f"{problem.reason}, but this configuration requires it.")
        sealed_raw = bundle.extras.get(SEAL_EVENTLOG_MEMBER)
        if sealed_raw is not None:
            try:
                sealed_log = parse_event_log(sealed_raw)
                for change in diff_logs(sealed_log, boot):
                    if change.pcr in changed:
                        causes.append(change.message)
                        changes.append(change.to_dict())
            except EventLogError as err:
                causes.append(f"The seal-time event log cannot be compared: {err.message}")
    else:
        causes.append(
            "This boot left no event log, so the changed events can't be named; the PCR values "
            "below say what changed."
        )
        if efivars_secure_boot is False and 7 in changed:
            causes.append(
                "PCR 7: Secure Boot is disabled on this boot (the UEFI variable SecureBoot is 0)."
            )
    for pcr in changed:
        causes.append(
            f"PCR {pcr} changed: sealed {sealed_values[pcr].hex()[:16]}…, now "
            f"{current_values.get(pcr, b'').hex()[:16]}…"
        )
    if not changed:
        causes.append("The TPM refused the PCR policy although the recorded PCR values match.")
    what = (
        "turn Secure Boot back on in the firmware setup"
        if any("Secure Boot" in c for c in causes)
        else "undo the change to the measured boot"
    )
    return violation(
        causes,
        f"Restore the firmware or boot setting ({what}) and reboot, or " + RECOVERY + ".",
        cause="pcr-policy",
        changed_pcrs=changed,
        changes=changes,
    )
