"""The recipes operators run: save, status, set, unlock, recovery keys, backup and restore.

Every recipe takes a :class:`HostContext` (which TPM, which event log, which bootbank). Nothing
here prints; results are returned and failures raised with a message and a remedy.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from hostseal.errors import HostsealError
from hostseal.measure import EventLog, compare_pcrs, parse_event_log, summarize
from hostseal.secureconfig import diagnose
from hostseal.secureconfig.archive import pack_dirs, unpack_to
from hostseal.secureconfig.bundle_file import (
    RECOVERY_KEYS_MEMBER,
    SEAL_EVENTLOG_MEMBER,
    build_state_tgz,
)
from hostseal.secureconfig.errors import SecureConfigError
from hostseal.secureconfig.info import EncryptionInfo, Mode, Requirements
from hostseal.secureconfig.payload import PayloadHeaderFields, decrypt_payload, encrypt_payload
from hostseal.secureconfig.recoverykey import RecoveryKey, format_recovery_id
from hostseal.secureconfig.requirements import policy_pcrs, unmet
from hostseal.secureconfig.slots import (
    NoneModeSlot,
    RecoverySlot,
    TpmSlot,
    generate_data_key,
    open_recovery_slots,
)
from hostseal.secureconfig.store import Bundle, Store
from hostseal.tpm import Tpm, TpmError, TpmUnavailable, open_tpm
from hostseal.tpm.seal import (
    PRIMARY_TEMPLATE,
    PolicyNotSatisfied,
    SealedBlob,
    SealedObjectWrongTpm,
    seal,
    unseal,
)

BANK = "sha256"
OBFUSCATION_NOTICE = (
    "Mode NONE: this configuration is obfuscated, not encrypted. The key is derived from data "
    "on the same disk, so anyone with a copy of the disk can read it. Use a TPM: hostseal "
    "config set --mode tpm."
)
CHANGE_REFUSED = "Unable to change the encryption mode and policy"


class PolicyChangeRefused(SecureConfigError):
    """A requested mode or requirement cannot be satisfied by this host now."""


class BackupBoundToOtherTpm(SecureConfigError):
    """A TPM-sealed backup was offered to a host with another TPM, without a recovery key."""


@dataclass(frozen=True)
class HostContext:
    tcti: str
    eventlog: Path
    bootbank: Path

    @property
    def store(self) -> Store:
        return Store(self.bootbank)


@dataclass
class Outcome:
    """What a recipe did, for the CLI to show."""

    info: EncryptionInfo
    notices: list[str] = field(default_factory=list)
    resealed: bool | None = None
    created_recovery_key: RecoveryKey | None = None


# -- the measured boot and the TPM ---------------------------------------------------------


def _read_boot(ctx: HostContext) -> tuple[bytes, EventLog]:
    try:
        raw = ctx.eventlog.read_bytes()
    except OSError as err:
        raise HostsealError(
            f"Cannot read the measured-boot event log {ctx.eventlog}: {err.strerror}.",
            "Point --eventlog / HOSTSEAL_EVENTLOG at it (Linux: "
            "/sys/kernel/security/tpm0/binary_bios_measurements, readable by root).",
        ) from None
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


def _usable_tpm(ctx: HostContext) -> Tpm | None:
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
    return SealedBlob(
        slot.sealed_public,
        slot.sealed_private,
        slot.pcr_bank,
        tuple(slot.pcrs),
        slot.policy_digest,
    )


def _unseal_or_violation(ctx: HostContext, bundle: Bundle) -> bytes:
    """The data key from the TPM slot, or a SecurityViolation that says why not."""
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
                boot: EventLog | None = _read_boot(ctx)[1]
            except HostsealError:
                boot = None
            raise diagnose.policy_failed(bundle, current, boot) from None


def _data_key(ctx: HostContext, bundle: Bundle) -> bytes:
    if bundle.info.mode is Mode.NONE:
        assert bundle.info.none_slot is not None
        return bundle.info.none_slot.open()
    return _unseal_or_violation(ctx, bundle)


# -- building and writing generations ------------------------------------------------------


def _keys_json(keys: Sequence[RecoveryKey]) -> bytes:
    return json.dumps(
        [{"recovery_id": k.formatted_id, "key": k.formatted_key} for k in keys]
    ).encode()


def _recovery_keys(bundle: Bundle, data_key: bytes) -> list[RecoveryKey]:
    blob = bundle.extras.get(RECOVERY_KEYS_MEMBER)
    if blob is None:
        return []
    plain = decrypt_payload(data_key, blob, PayloadHeaderFields.from_info(bundle.info))
    return [RecoveryKey.from_text(k["recovery_id"], k["key"]) for k in json.loads(plain)]


@dataclass
class _Plan:
    """Everything a generation is made of, before it is encrypted."""

    mode: Mode
    requirements: Requirements
    generation: int
    data_key: bytes
    config: bytes
    recovery_keys: list[RecoveryKey]
    tpm_slot: TpmSlot | None = None
    seal_summary: dict[str, object] = field(default_factory=dict)
    seal_log: bytes | None = None


def _build(plan: _Plan) -> bytes:
    info = EncryptionInfo(
        mode=plan.mode,
        requirements=plan.requirements,
        generation=plan.generation,
        saved_at=datetime.now(UTC).replace(microsecond=0),
        tpm_slot=plan.tpm_slot,
        recovery_slots=[RecoverySlot.create(plan.data_key, k) for k in plan.recovery_keys],
        none_slot=NoneModeSlot.create(plan.data_key) if plan.mode is Mode.NONE else None,
        seal_boot_summary=plan.seal_summary,
    )
    fields = PayloadHeaderFields.from_info(info)
    extras = {
        RECOVERY_KEYS_MEMBER: encrypt_payload(plan.data_key, _keys_json(plan.recovery_keys), fields)
    }
    if plan.seal_log is not None:
        extras[SEAL_EVENTLOG_MEMBER] = plan.seal_log
    return build_state_tgz(info, encrypt_payload(plan.data_key, plan.config, fields), extras)


def _write(ctx: HostContext, plan: _Plan) -> EncryptionInfo:
    raw = _build(plan)

    def prove(bundle: Bundle) -> None:
        key = _data_key(ctx, bundle)
        if not hmac.compare_digest(key, plan.data_key):
            raise SecureConfigError("The new generation unlocked to a different key.", "")
        decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(bundle.info))

    ctx.store.write(raw, prove)
    return Bundle.parse(raw).info


def _plan_seal(ctx: HostContext, plan: _Plan) -> _Plan:
    """Seal ``plan``'s data key to this host's TPM for its requirements (mode TPM)."""
    if plan.mode is Mode.NONE:
        return replace(plan, tpm_slot=None, seal_summary={}, seal_log=None)
    raw_log, log = _read_boot(ctx)
    problems = unmet(plan.requirements, log)
    if problems:
        raise PolicyChangeRefused(
            f"{CHANGE_REFUSED}: {problems[0].reason}.", f"{problems[0].remedy}."
        )
    with open_tpm(ctx.tcti) as tpm:
        slot, summary = _seal_slot(tpm, plan.data_key, plan.requirements, raw_log, log)
    return replace(plan, tpm_slot=slot, seal_summary=summary, seal_log=raw_log)


# -- recipes -------------------------------------------------------------------------------


def status(ctx: HostContext) -> dict[str, object]:
    """As ``esxcli system settings encryption get``; reads no secret, needs no TPM."""
    bundle = ctx.store.load()
    info = bundle.info
    return {
        "mode": info.mode.value,
        "protection": "TPM-sealed encryption" if info.mode is Mode.TPM else NoneModeSlot.PROTECTION,
        "require_secure_boot": info.requirements.require_secure_boot,
        "require_exec_installed_only": info.requirements.require_exec_installed_only,
        "recovery_key_ids": [format_recovery_id(s.recovery_id) for s in info.recovery_slots],
        "sealed_pcrs": list(info.tpm_slot.pcrs) if info.tpm_slot else [],
        "pcr_bank": info.tpm_slot.pcr_bank if info.tpm_slot else None,
        "tpm_ek_fingerprint": info.tpm_slot.tpm_ek_fingerprint if info.tpm_slot else None,
        "generation": info.generation,
        "last_saved": info.saved_at.isoformat(),
        "bootbank": str(ctx.bootbank),
        "notices": bundle.notices + ([OBFUSCATION_NOTICE] if info.mode is Mode.NONE else []),
    }


def save(ctx: HostContext, sources: Sequence[Path]) -> Outcome:
    """Pack ``sources`` and seal them (ESXi's auto-backup); creates the bundle on first use."""
    config = pack_dirs(list(sources))
    if not ctx.store.exists():
        return _create(ctx, config)
    bundle = ctx.store.load()
    key = _data_key(ctx, bundle)
    plan = _Plan(
        mode=bundle.info.mode,
        requirements=bundle.info.requirements,
        generation=bundle.info.generation + 1,
        data_key=key,
        config=config,
        recovery_keys=_recovery_keys(bundle, key),
    )
    info = _write(ctx, _plan_seal(ctx, plan))
    return Outcome(info, _mode_notices(info))


def _create(ctx: HostContext, config: bytes) -> Outcome:
    tpm = _usable_tpm(ctx)
    notices = []
    if tpm is None:
        mode, requirements = Mode.NONE, Requirements()
        notices.append("No usable TPM 2.0 with an active SHA-256 bank: created in mode NONE.")
    else:
        tpm.close()
        _, log = _read_boot(ctx)
        from hostseal.measure import secure_boot_state

        secure = secure_boot_state(log, allow_empty=True) is True
        mode, requirements = Mode.TPM, Requirements(require_secure_boot=secure)
        if not secure:
            notices.append(
                "Secure Boot is off, so it is not required: the key is bound to this TPM only. "
                "Turn Secure Boot on, then: hostseal config set --require-secure-boot."
            )
    key = RecoveryKey.generate()
    plan = _Plan(mode, requirements, 1, generate_data_key(), config, [key])
    info = _write(ctx, _plan_seal(ctx, plan))
    notices.append(
        f"Recovery key {key.formatted_id} created. Save it now (hostseal recovery list) and "
        "keep it off this host: without it, a replaced TPM or system board means reinstalling."
    )
    return Outcome(info, notices + _mode_notices(info), created_recovery_key=key)


def _mode_notices(info: EncryptionInfo) -> list[str]:
    return [OBFUSCATION_NOTICE] if info.mode is Mode.NONE else []


def set_policy(
    ctx: HostContext,
    mode: Mode | None = None,
    require_secure_boot: bool | None = None,
    require_exec_installed_only: bool | None = None,
) -> Outcome:
    """Change mode and requirements and re-seal; refuses (changing nothing) what this host
    can't satisfy now."""
    bundle = ctx.store.load()
    info = bundle.info
    new_mode = mode or info.mode
    req = Requirements(
        require_secure_boot=info.requirements.require_secure_boot
        if require_secure_boot is None
        else require_secure_boot,
        require_exec_installed_only=info.requirements.require_exec_installed_only
        if require_exec_installed_only is None
        else require_exec_installed_only,
    )
    if req.require_exec_installed_only and not req.require_secure_boot:
        if require_secure_boot is False:
            raise PolicyChangeRefused(
                f"{CHANGE_REFUSED}: exec-installed-only requires Secure Boot.",
                "Keep --require-secure-boot, or also give --no-require-exec-installed-only.",
            )
        req = replace(req, require_secure_boot=True)
    if new_mode is Mode.NONE and (req.require_secure_boot or req.require_exec_installed_only):
        raise PolicyChangeRefused(
            f"{CHANGE_REFUSED}: requirements can only be enforced with a TPM (mode NONE can't "
            "detect that Secure Boot was turned off).",
            "Also give --no-require-secure-boot --no-require-exec-installed-only, or keep mode "
            "TPM.",
        )
    if new_mode is Mode.TPM:
        tpm = _usable_tpm(ctx)
        if tpm is None:
            raise PolicyChangeRefused(
                f"{CHANGE_REFUSED}: no usable TPM 2.0 with an active SHA-256 PCR bank.",
                "Enable the TPM and select SHA-256 in the firmware setup (check with: hostseal "
                "tpm info).",
            )
        tpm.close()
    key = _data_key(ctx, bundle)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    plan = _Plan(new_mode, req, info.generation + 1, key, config, _recovery_keys(bundle, key))
    new_info = _write(ctx, _plan_seal(ctx, plan))
    return Outcome(new_info, _mode_notices(new_info))


def unlock(ctx: HostContext, dest: Path, recovery_secret: bytes | None = None) -> Outcome:
    """Decrypt the configuration into ``dest`` (the boot-time restore).

    Without a recovery key the TPM must release the key: otherwise a SecurityViolation that
    names what changed. With one, the configuration is decrypted and, if this host meets the
    requirements, sealed again to the TPM now present. Nothing on disk changes on failure.
    """
    bundle = ctx.store.load()
    info = bundle.info
    notices = list(bundle.notices)
    if recovery_secret is None:
        key = _data_key(ctx, bundle)
        if info.mode is Mode.TPM:
            # Checked again against the measured boot (the PCR policy already enforced it).
            _, log = _read_boot(ctx)
            problems = unmet(info.requirements, log)
            if problems:
                raise diagnose.violation(
                    [f"{p.reason}, but this configuration requires it." for p in problems],
                    f"{problems[0].remedy}, or {diagnose.RECOVERY}.",
                    cause="requirements",
                )
        config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
        unpack_to(config, dest)
        if bundle.source == "state.tgz":
            ctx.store.cleanup()
        return Outcome(info, notices + _mode_notices(info))
    key, slot = open_recovery_slots(info.recovery_slots, recovery_secret)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    unpack_to(config, dest)
    ctx.store.audit("config.unlock.recovery", recovery_id=format_recovery_id(slot.recovery_id))
    if info.mode is Mode.NONE:
        return Outcome(info, notices + _mode_notices(info), resealed=False)
    plan = _Plan(
        info.mode, info.requirements, info.generation + 1, key, config, _recovery_keys(bundle, key)
    )
    try:
        reason = _usable_tpm_or_reason(ctx)
        if reason is not None:
            raise PolicyChangeRefused(
                reason, "Enable the TPM and its SHA-256 PCR bank in the firmware setup."
            )
        new_info = _write(ctx, _plan_seal(ctx, plan))
    except HostsealError as err:
        notices.append(
            "Decrypted for rescue with the recovery key, but NOT sealed again: "
            + err.message.removeprefix(f"{CHANGE_REFUSED}: ")
            + (f" {err.remedy}" if err.remedy else "")
            + " After fixing it, unlock again (with the recovery key if the TPM still refuses)."
        )
        return Outcome(info, notices, resealed=False)
    notices.append(
        "The configuration is sealed to this host's TPM again. The recovery key was used: "
        "rotate it now (hostseal recovery rotate) and save the new one."
    )
    return Outcome(new_info, notices, resealed=True)


def _usable_tpm_or_reason(ctx: HostContext) -> str | None:
    tpm = _usable_tpm(ctx)
    if tpm is None:
        return "no usable TPM 2.0 with an active SHA-256 PCR bank is present."
    tpm.close()
    return None


def recovery_list(ctx: HostContext) -> list[RecoveryKey]:
    """The recovery keys (Recovery ID and Key). Audited: every read is logged."""
    bundle = ctx.store.load()
    keys = _recovery_keys(bundle, _data_key(ctx, bundle))
    ctx.store.audit("recovery.list", recovery_ids=[k.formatted_id for k in keys])
    return keys


def recovery_rotate(ctx: HostContext, recovery_id: UUID | None = None) -> RecoveryKey:
    """Replace a recovery key (the only one, or ``recovery_id``) by a new one, atomically;
    the old key stops working."""
    bundle = ctx.store.load()
    key = _data_key(ctx, bundle)
    keys = _recovery_keys(bundle, key)
    if recovery_id is None:
        if len(keys) > 1:
            raise SecureConfigError(
                f"This configuration has {len(keys)} recovery keys.",
                "Say which one to rotate with --id (see hostseal config status).",
            )
        old = keys[0] if keys else None
    else:
        matches = [k for k in keys if k.recovery_id == recovery_id]
        if not matches:
            raise SecureConfigError(
                f"No recovery key has the ID {format_recovery_id(recovery_id)}.",
                "See the IDs with: hostseal config status.",
            )
        old = matches[0]
    new = RecoveryKey.generate()
    keys = [k for k in keys if k is not old] + [new]
    info = bundle.info
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    plan = _Plan(info.mode, info.requirements, info.generation + 1, key, config, keys)
    _write(ctx, _plan_seal(ctx, plan))
    ctx.store.audit(
        "recovery.rotate",
        old_recovery_id=old.formatted_id if old else None,
        new_recovery_id=new.formatted_id,
    )
    return new


def backup(ctx: HostContext, out: Path) -> EncryptionInfo:
    """Write the current generation to ``out`` (it stays sealed: bound to this TPM)."""
    from hostseal.fsutil import atomic_write

    bundle = ctx.store.load()
    atomic_write(out, bundle.raw)
    return bundle.info


def restore(ctx: HostContext, backup_file: Path, recovery_secret: bytes | None = None) -> Outcome:
    """Install a backup as the current configuration, after proving this host can unlock it."""
    try:
        raw = backup_file.read_bytes()
    except OSError as err:
        raise SecureConfigError(f"Cannot read {backup_file}: {err.strerror}.", "") from None
    bundle = Bundle.parse(raw, str(backup_file))
    info = bundle.info
    if recovery_secret is None:
        try:
            key = _data_key(ctx, bundle)
        except HostsealError as err:
            if info.mode is not Mode.TPM:
                raise
            raise BackupBoundToOtherTpm(
                "This backup is sealed to a TPM that will not release its key here: "
                + err.message.removeprefix(diagnose.HEADLINE).strip().lstrip("- "),
                "Restore it with a recovery key of that configuration (--recovery-key-file); "
                "no flag bypasses the TPM binding, because it is what keeps a stolen backup "
                "unreadable.",
            ) from None
        decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))

        def prove(candidate: Bundle) -> None:
            got = _data_key(ctx, candidate)
            decrypt_payload(got, candidate.payload, PayloadHeaderFields.from_info(candidate.info))

        ctx.store.write(raw, prove)
        return Outcome(info, ["Backup restored."])
    key, slot = open_recovery_slots(info.recovery_slots, recovery_secret)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    ctx.store.audit("config.restore.recovery", recovery_id=format_recovery_id(slot.recovery_id))
    plan = _Plan(
        info.mode, info.requirements, info.generation + 1, key, config, _recovery_keys(bundle, key)
    )
    new_info = _write(ctx, _plan_seal(ctx, plan))
    return Outcome(
        new_info,
        [
            "Backup restored with the recovery key and sealed to this host's TPM. Rotate the "
            "recovery key now (hostseal recovery rotate)."
        ],
        resealed=True,
    )
