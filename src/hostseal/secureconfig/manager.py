"""The recipes operators run: save, status, set, unlock, recovery keys, backup and restore.

Every recipe takes a :class:`HostContext` (which TPM, which event log, which bootbank). Nothing
here prints; results are returned and failures raised with a message and a remedy.

Every generation written has a **new data key** (rotation means rotation, THREATS.md rule 6):
the data key of an older copy (a backup, a leftover ``.previous``), however it was obtained --
a rotated-out recovery key, a revealed escrow copy -- opens no later generation.

Edge: the recipes drive the TPM, read the event log and write the bootbank and the
configuration directories.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import UUID

from hostseal.errors import HostsealError
from hostseal.secureconfig import diagnose
from hostseal.secureconfig._generation import (
    BANK,
    CHANGE_REFUSED,
    NO_LOG_UNLOCKED,
    EventLogMissing,
    HostContext,
    Plan,
    PolicyChangeRefused,
    open_data_key,
    plan_seal,
    read_boot,
    recovery_keys,
    usable_tpm,
    write,
)
from hostseal.secureconfig.adopted import Adopted, join, split
from hostseal.secureconfig.archive import collect, entries_of, unpack_to
from hostseal.secureconfig.errors import BundleCorrupt, NotABackup, SecureConfigError
from hostseal.secureconfig.info import EncryptionInfo, Mode, PendingRotation, Requirements
from hostseal.secureconfig.payload import PayloadHeaderFields, decrypt_payload
from hostseal.secureconfig.recoverykey import RecoveryKey, format_recovery_id
from hostseal.secureconfig.requirements import unmet
from hostseal.secureconfig.slots import NoneModeSlot, open_recovery_slots
from hostseal.secureconfig.store import Bundle, Reader

__all__ = [
    "BANK",
    "CHANGE_REFUSED",
    "OBFUSCATION_NOTICE",
    "ROTATION_INTERRUPTED",
    "BackupBoundToOtherTpm",
    "HostContext",
    "Outcome",
    "PolicyChangeRefused",
    "backup",
    "recovery_list",
    "recovery_rotate",
    "rekey",
    "restore",
    "save",
    "set_policy",
    "status",
    "unlock",
]

OBFUSCATION_NOTICE = (
    "Mode NONE: this configuration is obfuscated, not encrypted. The key is derived from data "
    "on the same disk, so anyone with a copy of the disk can read it. Use a TPM: hostseal "
    "config set --mode tpm."
)
ROTATION_INTERRUPTED = (
    "A recovery-key rotation was interrupted: the old key still works, the new one may never "
    "have been shown. Run hostseal recovery rotate again to finish it."
)


class BackupBoundToOtherTpm(SecureConfigError):
    """A TPM-sealed backup was offered to a host with another TPM, without a recovery key."""


@dataclass
class Outcome:
    """What a recipe did, for the CLI to show."""

    info: EncryptionInfo
    notices: list[str] = field(default_factory=list)
    resealed: bool | None = None
    created_recovery_key: RecoveryKey | None = None


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
        "rotation_pending": None
        if info.rotation is None
        else {
            "retiring": format_recovery_id(info.rotation.retiring),
            "new": format_recovery_id(info.rotation.new),
        },
        "notices": bundle.notices
        + ([OBFUSCATION_NOTICE] if info.mode is Mode.NONE else [])
        + ([ROTATION_INTERRUPTED] if info.rotation is not None else []),
    }


def save(ctx: HostContext, sources: Sequence[Path]) -> Outcome:
    """Pack ``sources`` and seal them; creates the bundle on first use. The adopted paths
    (:mod:`~.inplace`) are kept as they were sealed."""
    base = collect(list(sources))
    with ctx.store.locked():
        if not ctx.store.exists():
            return save_config(ctx, join(base, Adopted()))
        bundle, key, config = open_config(ctx)
        _, adopted = split(entries_of(config))
        return save_config(ctx, join(base, adopted), (bundle, key))


def open_config(ctx: HostContext) -> tuple[Bundle, bytes, bytes]:
    """The current generation, its data key (from the TPM or the NONE slot) and its archive."""
    bundle = ctx.store.load()
    key = open_data_key(ctx, bundle)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(bundle.info))
    return bundle, key, config


def save_config(
    ctx: HostContext, config: bytes, opened: tuple[Bundle, bytes] | None = None
) -> Outcome:
    """Seal the configuration archive ``config`` as the next generation of the bundle
    ``opened`` (with its data key), or as a new bundle when there is none."""
    if opened is None:
        return _create(ctx, config)
    bundle, key = opened
    plan = Plan.following(bundle.info, config, recovery_keys(bundle, key))
    info = write(ctx, plan_seal(ctx, plan))
    return Outcome(info, _mode_notices(info))


def _create(ctx: HostContext, config: bytes) -> Outcome:
    tpm = usable_tpm(ctx)
    notices = []
    if tpm is None:
        mode, requirements = Mode.NONE, Requirements()
        notices.append("No usable TPM 2.0 with an active SHA-256 bank: created in mode NONE.")
    else:
        tpm.close()
        from hostseal.measure import secure_boot_state

        try:
            secure = secure_boot_state(read_boot(ctx)[1], allow_empty=True) is True
        except EventLogMissing as err:
            secure = False
            notices.append(f"{err.message} {err.remedy}")
        mode, requirements = Mode.TPM, Requirements(require_secure_boot=secure)
        if not secure:
            notices.append(
                "Secure Boot is off, so it is not required: the key is bound to this TPM only. "
                "Turn Secure Boot on, then: hostseal config set --require-secure-boot."
            )
    key = RecoveryKey.generate()
    plan = Plan(mode, requirements, 1, config, [key])
    info = write(ctx, plan_seal(ctx, plan))
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
        tpm = usable_tpm(ctx)
        if tpm is None:
            raise PolicyChangeRefused(
                f"{CHANGE_REFUSED}: no usable TPM 2.0 with an active SHA-256 PCR bank.",
                "Enable the TPM and select SHA-256 in the firmware setup (check with: hostseal "
                "tpm info).",
            )
        tpm.close()
    key = open_data_key(ctx, bundle)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    plan = replace(
        Plan.following(info, config, recovery_keys(bundle, key)), mode=new_mode, requirements=req
    )
    new_info = write(ctx, plan_seal(ctx, plan))
    return Outcome(new_info, _mode_notices(new_info))


def unlock(
    ctx: HostContext, dest: Path, recovery_secret: bytes | None = None, *, owners: bool = False
) -> Outcome:
    """Decrypt the configuration into ``dest`` (the boot-time restore).

    Without a recovery key the TPM must release the key: otherwise a SecurityViolation that
    names what changed. With one, the configuration is decrypted and, if this host meets the
    requirements, sealed again to the TPM now present. Nothing on disk changes on failure.
    ``owners``: give the files their stored numeric owners (the adopted paths; needs root).

    A boot that left no event log still unlocks when the TPM releases the key (its PCR policy
    enforced the requirements); a notice says so and what to do.
    """
    bundle = ctx.store.load()
    info = bundle.info
    notices = list(bundle.notices)
    if recovery_secret is None:
        key = open_data_key(ctx, bundle)
        if info.mode is Mode.TPM:
            notices += _recheck_requirements(ctx, info)
        config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
        unpack_to(config, dest, owners=owners)
        if bundle.source == "state.tgz":
            ctx.store.cleanup()
        return Outcome(info, notices + _mode_notices(info))
    key, slot = open_recovery_slots(info.recovery_slots, recovery_secret)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    unpack_to(config, dest, owners=owners)
    ctx.store.audit("config.unlock.recovery", recovery_id=format_recovery_id(slot.recovery_id))
    if info.mode is Mode.NONE:
        return Outcome(info, notices + _mode_notices(info), resealed=False)
    plan = Plan.following(info, config, recovery_keys(bundle, key))
    try:
        reason = _usable_tpm_or_reason(ctx)
        if reason is not None:
            raise PolicyChangeRefused(
                reason, "Enable the TPM and its SHA-256 PCR bank in the firmware setup."
            )
        new_info = write(ctx, plan_seal(ctx, plan))
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


def _recheck_requirements(ctx: HostContext, info: EncryptionInfo) -> list[str]:
    """The requirements checked again against the measured boot (the PCR policy already
    enforced them); a notice when this boot has no event log to check them with."""
    try:
        _, log = read_boot(ctx)
    except EventLogMissing as err:
        return [f"{err.message} {NO_LOG_UNLOCKED} {err.remedy}"]
    problems = unmet(info.requirements, log)
    if problems:
        raise diagnose.violation(
            [f"{p.reason}, but this configuration requires it." for p in problems],
            f"{problems[0].remedy}, or {diagnose.RECOVERY}.",
            cause="requirements",
        )
    return []


def _usable_tpm_or_reason(ctx: HostContext) -> str | None:
    tpm = usable_tpm(ctx)
    if tpm is None:
        return "no usable TPM 2.0 with an active SHA-256 PCR bank is present."
    tpm.close()
    return None


MAX_REASON_CHARS = 500


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise SecureConfigError(
            "Reading the recovery keys needs a reason, and none was given.",
            "Say why with --reason (e.g. --reason 'ticket OPS-42: system board replaced'); it is "
            "written to the bootbank's audit log with your user name.",
        )
    if len(reason) > MAX_REASON_CHARS:
        raise SecureConfigError(
            f"The reason is {len(reason)} characters long; at most {MAX_REASON_CHARS} are kept.",
            "Shorten it: name the ticket or the event, not the whole story.",
        )
    return reason


def recovery_list(
    ctx: HostContext, reason: str, reader: Reader = Reader.PERSON
) -> list[RecoveryKey]:
    """The recovery keys (Recovery ID and Key): a reveal. Audited with ``reason`` and who read
    them (a person's user name, or the agent escrowing them); a blank reason is refused."""
    reason = _check_reason(reason)
    bundle = ctx.store.load()
    keys = recovery_keys(bundle, open_data_key(ctx, bundle))
    ctx.store.audit(
        "recovery.list",
        recovery_ids=[k.formatted_id for k in keys],
        reason=reason,
        reader=reader.value,
    )
    return keys


def _rotation_target(
    keys: list[RecoveryKey], pending: PendingRotation | None, recovery_id: UUID | None
) -> tuple[RecoveryKey | None, list[RecoveryKey]]:
    """The key to retire and the keys to keep (an interrupted rotation's unseen key dropped)."""
    if pending is not None:
        if recovery_id is not None and recovery_id != pending.retiring:
            raise SecureConfigError(
                f"A rotation of recovery key {format_recovery_id(pending.retiring)} was "
                "interrupted; finish it before rotating another key.",
                "Run hostseal recovery rotate without --id, then rotate the other key.",
            )
        keys = [k for k in keys if k.recovery_id != pending.new]
        recovery_id = pending.retiring
    if recovery_id is None:
        if len(keys) > 1:
            raise SecureConfigError(
                f"This configuration has {len(keys)} recovery keys.",
                "Say which one to rotate with --id (see hostseal config status).",
            )
        return (keys[0] if keys else None), keys
    matches = [k for k in keys if k.recovery_id == recovery_id]
    if not matches:
        raise SecureConfigError(
            f"No recovery key has the ID {format_recovery_id(recovery_id)}.",
            "See the IDs with: hostseal config status.",
        )
    return matches[0], keys


def recovery_rotate(
    ctx: HostContext,
    recovery_id: UUID | None = None,
    show: Callable[[RecoveryKey], None] | None = None,
) -> RecoveryKey:
    """Replace a recovery key (the only one, or ``recovery_id``) by a new one, in two durable
    steps, each with a new data key:

    1. a generation with the old **and** the new key (both work), marked as a pending rotation;
    2. ``show(new)`` -- it must raise if the key could not be shown; the old key then stays;
    3. a generation without the old key.

    Killed anywhere, the old key works, or the new one was shown and works. A pending rotation
    found here (an earlier run was interrupted) is finished: its possibly unseen key is dropped
    and a fresh one is shown instead.
    """
    bundle = ctx.store.load()
    key = open_data_key(ctx, bundle)
    info = bundle.info
    old, keys = _rotation_target(recovery_keys(bundle, key), info.rotation, recovery_id)
    new = RecoveryKey.generate()
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    pending = None if old is None else PendingRotation(old.recovery_id, new.recovery_id)
    plan = replace(Plan.following(info, config, [*keys, new]), rotation=pending)
    write(ctx, plan_seal(ctx, plan))
    fields = {
        "old_recovery_id": old.formatted_id if old else None,
        "new_recovery_id": new.formatted_id,
    }
    if info.rotation is not None:
        fields["dropped_unconfirmed_id"] = format_recovery_id(info.rotation.new)
    ctx.store.audit("recovery.rotate.start", **fields)
    if show is not None:
        show(new)
    if old is not None:
        _retire(ctx, old.recovery_id, new.recovery_id)
    ctx.store.audit("recovery.rotate", **fields)
    return new


def _retire(ctx: HostContext, old: UUID, new: UUID) -> None:
    """Step 2 of a rotation: the current generation without ``old``, under a new data key."""
    bundle = ctx.store.load()
    info = bundle.info
    if info.rotation != PendingRotation(old, new):
        raise SecureConfigError(
            "The recovery-key rotation was changed by another command while it ran; the old key "
            f"{format_recovery_id(old)} was not removed.",
            "Check with hostseal config status, then run hostseal recovery rotate again.",
        )
    key = open_data_key(ctx, bundle)
    keys = [k for k in recovery_keys(bundle, key) if k.recovery_id != old]
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    write(ctx, plan_seal(ctx, replace(Plan.following(info, config, keys), rotation=None)))


def rekey(ctx: HostContext) -> Outcome:
    """A new generation of the same content under a new data key, every slot wrapped again.

    Copies saved before (backups) keep opening with the keys they held; none of them opens this
    generation. Audited."""
    bundle = ctx.store.load()
    info = bundle.info
    key = open_data_key(ctx, bundle)
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    plan = Plan.following(info, config, recovery_keys(bundle, key))
    new_info = write(ctx, plan_seal(ctx, plan))
    ctx.store.audit(
        "config.rekey",
        generation=new_info.generation,
        recovery_ids=[s.formatted_id for s in new_info.recovery_slots],
    )
    return Outcome(new_info, _mode_notices(new_info))


def backup(ctx: HostContext, out: Path) -> EncryptionInfo:
    """Write the current generation to ``out`` (it stays sealed: bound to this TPM)."""
    from hostseal.fsutil import atomic_write

    bundle = ctx.store.load()
    atomic_write(out, bundle.raw)
    return bundle.info


def _restore_plan(ctx: HostContext, bundle: Bundle, key: bytes) -> tuple[Plan, str]:
    """The generation a restore writes: the backup's content and policy under a new data key,
    with the recovery keys in place now if this host can open its current bundle (a backup must
    not bring a rotated-out key back), else the backup's own."""
    info = bundle.info
    config = decrypt_payload(key, bundle.payload, PayloadHeaderFields.from_info(info))
    keys, rotation = recovery_keys(bundle, key), info.rotation
    note = "It has the backup's recovery keys: rotate them (hostseal recovery rotate)."
    generation = info.generation + 1
    with contextlib.suppress(HostsealError):  # no current bundle, or one this host can't open
        current = ctx.store.load()
        generation = max(info.generation, current.info.generation) + 1
        keys, rotation = recovery_keys(current, open_data_key(ctx, current)), current.info.rotation
        note = "It keeps this host's current recovery keys, not the backup's."
    return Plan(info.mode, info.requirements, generation, config, keys, rotation), note


def restore(ctx: HostContext, backup_file: Path, recovery_secret: bytes | None = None) -> Outcome:
    """Install a backup's content and policy as a new generation (new data key), after
    proving this host can unlock it."""
    try:
        raw = backup_file.read_bytes()
    except OSError as err:
        raise SecureConfigError(f"Cannot read {backup_file}: {err.strerror}.", "") from None
    try:
        bundle = Bundle.parse(raw, str(backup_file))
    except BundleCorrupt as err:
        raise NotABackup(
            f"{backup_file} is not a hostseal configuration backup: "
            + err.message.replace("state.tgz", "it", 1),
            "Give the file that hostseal config backup --out wrote. Nothing was changed.",
        ) from None
    info = bundle.info
    if recovery_secret is None:
        try:
            key = open_data_key(ctx, bundle)
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
        plan, note = _restore_plan(ctx, bundle, key)
        new_info = write(ctx, plan_seal(ctx, plan))
        return Outcome(new_info, [f"Backup restored. {note}"])
    key, slot = open_recovery_slots(info.recovery_slots, recovery_secret)
    plan, note = _restore_plan(ctx, bundle, key)
    ctx.store.audit("config.restore.recovery", recovery_id=format_recovery_id(slot.recovery_id))
    new_info = write(ctx, plan_seal(ctx, plan))
    return Outcome(
        new_info,
        [
            "Backup restored with the recovery key and sealed to this host's TPM. Rotate the "
            f"recovery key now (hostseal recovery rotate). {note}"
        ],
        resealed=True,
    )
