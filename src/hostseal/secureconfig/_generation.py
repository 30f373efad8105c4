"""How a generation of the sealed configuration is built, sealed, written and opened.

The machinery under :mod:`hostseal.secureconfig.manager`'s recipes: reading the measured boot,
sealing the data key to the TPM, opening a generation's data key (TPM or NONE slot), and writing
a generation through :class:`~hostseal.secureconfig.store.Store` after proving it unlocks. Every
:class:`Plan` draws a new data key, so no two generations share one.

Edge: drives the TPM (:mod:`hostseal.tpm`), reads the event log and writes the bootbank.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hostseal.errors import HostsealError
from hostseal.measure import EventLog, compare_pcrs, parse_event_log, summarize
from hostseal.secureconfig import diagnose
from hostseal.secureconfig.bundle_file import (
    RECOVERY_KEYS_MEMBER,
    SEAL_EVENTLOG_MEMBER,
    build_state_tgz,
)
from hostseal.secureconfig.errors import SecureConfigError
from hostseal.secureconfig.info import EncryptionInfo, Mode, PendingRotation, Requirements
from hostseal.secureconfig.payload import PayloadHeaderFields, decrypt_payload, encrypt_payload
from hostseal.secureconfig.recoverykey import RecoveryKey
from hostseal.secureconfig.requirements import policy_pcrs, unmet
from hostseal.secureconfig.slots import NoneModeSlot, RecoverySlot, TpmSlot, generate_data_key
from hostseal.secureconfig.store import Bundle, Store
from hostseal.tpm import TpmError, TpmUnavailable

if TYPE_CHECKING:  # the TPM stack (tpm2_pytss) is loaded by the functions that use a TPM
    from hostseal.tpm import Tpm
    from hostseal.tpm.seal import SealedBlob

BANK = "sha256"
CHANGE_REFUSED = "Unable to change the encryption mode and policy"


NO_LOG_UNLOCKED = (
    "The TPM released the key, so the PCRs it is sealed to are as they were when it was sealed; "
    "the requirements could not be checked against an event log as well."
)


class EventLogMissing(HostsealError):
    """This boot left no measured-boot event log (the file does not exist)."""


class PolicyChangeRefused(SecureConfigError):
    """A requested mode or requirement cannot be satisfied by this host now."""


@dataclass(frozen=True)
class HostContext:
    """Which TPM (TCTI string), which measured-boot event log, which bootbank."""

    tcti: str
    eventlog: Path
    bootbank: Path
    efivars: Path = Path("/sys/firmware/efi/efivars")

    @property
    def store(self) -> Store:
        return Store(self.bootbank)


# -- the measured boot and the TPM ---------------------------------------------------------


def read_boot(ctx: HostContext) -> tuple[bytes, EventLog]:
    """This boot's event log, raw and parsed. No log at all (REALBOOT obstacle 4: Debian's grub
    with Secure Boot off) is :class:`EventLogMissing`, with :mod:`hostseal.hostinfo`'s words
    (the same in tpm info, the agent, the doctor and unlock)."""
    from hostseal.hostinfo import NoEventLog, read_eventlog

    try:
        raw = read_eventlog(ctx.eventlog)
    except NoEventLog as err:
        raise EventLogMissing(err.message, err.remedy) from None
    return raw, parse_event_log(raw)


def _check_log_matches_tpm(tpm: Tpm, log: EventLog) -> None:
    touched = sorted({e.pcr for e in log.events if e.pcr < 24})
    mismatches = compare_pcrs(log, {BANK: tpm.pcr_read(BANK, touched)})
    if mismatches:
        pcrs = ", ".join(str(m.pcr) for m in mismatches)
        raise HostsealError(
            f"The event log does not match the TPM's {BANK} PCRs {pcrs}: it is not this boot's "
            "log, or it was altered.",
            "Use the kernel's log (/sys/kernel/security/tpm0/binary_bios_measurements) of the "
            "current boot.",
        )


def usable_tpm(ctx: HostContext) -> Tpm | None:
    from hostseal.tpm import open_tpm

    try:
        tpm = open_tpm(ctx.tcti)
    except TpmError:
        return None
    if not tpm.facts().sha256_active:
        tpm.close()
        return None
    return tpm


def _seal_slot(
    tpm: Tpm, data_key: bytes, requirements: Requirements, raw_log: bytes, log: EventLog
) -> tuple[TpmSlot, dict[str, object]]:
    from hostseal.tpm.seal import PRIMARY_TEMPLATE, seal

    _check_log_matches_tpm(tpm, log)
    pcrs = policy_pcrs(requirements, log)
    values = tpm.pcr_read(BANK, pcrs) if pcrs else {}
    blob = seal(tpm, data_key, BANK, values)
    slot = TpmSlot(
        sealed_public=blob.public,
        sealed_private=blob.private,
        pcr_bank=BANK,
        pcrs=list(blob.pcrs),
        policy_digest=blob.policy_digest,
        primary=PRIMARY_TEMPLATE,
        tpm_ek_fingerprint=tpm.ek_fingerprint(),
    )
    summary: dict[str, object] = {
        "pcr_bank": BANK,
        "sealed_pcr_values": {str(p): v.hex() for p, v in values.items()},
        "boot": summarize(log),
    }
    return slot, summary


def _blob(slot: TpmSlot) -> SealedBlob:
    from hostseal.tpm.seal import SealedBlob

    return SealedBlob(
        slot.sealed_public,
        slot.sealed_private,
        slot.pcr_bank,
        tuple(slot.pcrs),
        slot.policy_digest,
    )


def _unseal_or_violation(ctx: HostContext, bundle: Bundle) -> bytes:
    """The data key from the TPM slot, or a SecurityViolation that says why not."""
    from hostseal.tpm import open_tpm
    from hostseal.tpm.seal import PolicyNotSatisfied, SealedObjectWrongTpm, unseal

    slot = bundle.info.tpm_slot
    assert slot is not None
    try:
        tpm = open_tpm(ctx.tcti)
    except TpmUnavailable as err:
        raise diagnose.no_tpm(err.message) from None
    with tpm:
        try:
            return unseal(tpm, _blob(slot))
        except SealedObjectWrongTpm:
            raise diagnose.wrong_tpm(slot.tpm_ek_fingerprint, tpm.ek_fingerprint()) from None
        except PolicyNotSatisfied:
            current = tpm.pcr_read(slot.pcr_bank, slot.pcrs)
            try:
                boot: EventLog | None = read_boot(ctx)[1]
            except HostsealError:
                boot = None
            raise diagnose.policy_failed(
                bundle, current, boot, _efivars_secure_boot(ctx) if boot is None else None
            ) from None


def _efivars_secure_boot(ctx: HostContext) -> bool | None:
    """Secure Boot from the UEFI variable, for the host's own TPM device only (a software
    TPM's host is not this machine), when no event log can say."""
    from hostseal.hostinfo import secure_boot_from_efivars
    from hostseal.tpm.tcti import parse_tcti

    try:
        if parse_tcti(ctx.tcti).is_software:
            return None
    except HostsealError:
        return None
    found = secure_boot_from_efivars(ctx.efivars)
    return None if found is None else found.enabled


def open_data_key(ctx: HostContext, bundle: Bundle) -> bytes:
    if bundle.info.mode is Mode.NONE:
        assert bundle.info.none_slot is not None
        return bundle.info.none_slot.open()
    return _unseal_or_violation(ctx, bundle)


# -- building and writing generations ------------------------------------------------------


def _keys_json(keys: Sequence[RecoveryKey]) -> bytes:
    return json.dumps(
        [{"recovery_id": k.formatted_id, "key": k.formatted_key} for k in keys]
    ).encode()


def recovery_keys(bundle: Bundle, data_key: bytes) -> list[RecoveryKey]:
    blob = bundle.extras.get(RECOVERY_KEYS_MEMBER)
    if blob is None:
        return []
    plain = decrypt_payload(data_key, blob, PayloadHeaderFields.from_info(bundle.info))
    return [RecoveryKey.from_text(k["recovery_id"], k["key"]) for k in json.loads(plain)]


@dataclass
class Plan:
    """Everything a generation is made of, before it is encrypted."""

    mode: Mode
    requirements: Requirements
    generation: int
    config: bytes
    recovery_keys: list[RecoveryKey]
    rotation: PendingRotation | None = None
    data_key: bytes = field(default_factory=generate_data_key)
    """Always a new key: every slot is wrapped afresh, no generation shares a data key."""
    tpm_slot: TpmSlot | None = None
    seal_summary: dict[str, object] = field(default_factory=dict)
    seal_log: bytes | None = None

    @classmethod
    def following(cls, info: EncryptionInfo, config: bytes, keys: list[RecoveryKey]) -> Plan:
        """The next generation of ``info``: same mode, requirements and pending rotation."""
        return cls(info.mode, info.requirements, info.generation + 1, config, keys, info.rotation)


def _build(plan: Plan) -> bytes:
    info = EncryptionInfo(
        mode=plan.mode,
        requirements=plan.requirements,
        generation=plan.generation,
        saved_at=datetime.now(UTC).replace(microsecond=0),
        tpm_slot=plan.tpm_slot,
        recovery_slots=[RecoverySlot.create(plan.data_key, k) for k in plan.recovery_keys],
        none_slot=NoneModeSlot.create(plan.data_key) if plan.mode is Mode.NONE else None,
        seal_boot_summary=plan.seal_summary,
        rotation=plan.rotation,
    )
    fields = PayloadHeaderFields.from_info(info)
    extras = {
        RECOVERY_KEYS_MEMBER: encrypt_payload(plan.data_key, _keys_json(plan.recovery_keys), fields)
    }
    if plan.seal_log is not None:
        extras[SEAL_EVENTLOG_MEMBER] = plan.seal_log
    return build_state_tgz(info, encrypt_payload(plan.data_key, plan.config, fields), extras)


def write(ctx: HostContext, plan: Plan) -> EncryptionInfo:
    """Install ``plan`` as the current generation, proven to unlock from disk; its info."""
    raw = _build(plan)

    def prove(bundle: Bundle) -> None:
        key = open_data_key(ctx, bundle)
        if not hmac.compare_digest(key, plan.data_key):
            raise SecureConfigError("The new generation unlocked to a different key.", "")
        decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(bundle.info))

    ctx.store.write(raw, prove)
    return Bundle.parse(raw).info


def plan_seal(ctx: HostContext, plan: Plan) -> Plan:
    """Seal ``plan``'s data key to this host's TPM for its requirements (mode TPM)."""
    if plan.mode is Mode.NONE:
        return replace(plan, tpm_slot=None, seal_summary={}, seal_log=None)
    try:
        raw_log, log = read_boot(ctx)
    except EventLogMissing as err:
        return _plan_seal_without_log(ctx, plan, err)
    problems = unmet(plan.requirements, log)
    if problems:
        raise PolicyChangeRefused(
            f"{CHANGE_REFUSED}: {problems[0].reason}.", f"{problems[0].remedy}."
        )
    from hostseal.tpm import open_tpm

    with open_tpm(ctx.tcti) as tpm:
        slot, summary = _seal_slot(tpm, plan.data_key, plan.requirements, raw_log, log)
    return replace(plan, tpm_slot=slot, seal_summary=summary, seal_log=raw_log)


def _plan_seal_without_log(ctx: HostContext, plan: Plan, missing: EventLogMissing) -> Plan:
    """Seal to this TPM alone when the boot left no event log: possible only when nothing is
    required (no PCR is sealed), since the log is what shows the requirements are met."""
    if plan.requirements.require_secure_boot or plan.requirements.require_exec_installed_only:
        raise PolicyChangeRefused(
            f"{CHANGE_REFUSED}: Secure Boot is required, but no event log shows this boot's "
            f"state. {missing.message}",
            missing.remedy,
        )
    from hostseal.tpm import open_tpm
    from hostseal.tpm.seal import PRIMARY_TEMPLATE, seal

    with open_tpm(ctx.tcti) as tpm:
        blob = seal(tpm, plan.data_key, BANK, {})
        slot = TpmSlot(
            sealed_public=blob.public,
            sealed_private=blob.private,
            pcr_bank=BANK,
            pcrs=list(blob.pcrs),
            policy_digest=blob.policy_digest,
            primary=PRIMARY_TEMPLATE,
            tpm_ek_fingerprint=tpm.ek_fingerprint(),
        )
    summary: dict[str, object] = {"pcr_bank": BANK, "sealed_pcr_values": {}, "boot": {}}
    return replace(plan, tpm_slot=slot, seal_summary=summary, seal_log=None)
