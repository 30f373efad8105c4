"""``hostseal doctor before-board-swap``: the vendor's checklist before a system board or TPM
is replaced, run, with a GO / NO-GO.

A configuration sealed to this TPM opens after the swap only with a recovery key, and a backup
taken now can only be restored there with that key too. So, for a configuration in mode TPM,
GO needs:

* at least one recovery key;
* proof that a recovery key is kept off the host: every key escrowed with the attestation
  service (the agent's ``escrow.json``), or a saved key file given with ``--recovery-key-file``
  that really opens one of the configuration's recovery slots (checked here, offline);
* a backup of the *current* generation, given with ``--backup FILE``: it must parse, be the
  current generation (byte for byte, or at least the same generation with the same recovery
  IDs), and open with the saved key when one is given. hostseal keeps no record of backups
  (``hostseal config backup`` writes wherever it is told), so a backup is only believed when
  it is shown.

The TPM's state and whether the configuration unlocks now are reported too (the checklist's
"check the TPM state"), but do not decide GO: a failing TPM is often why the board is swapped.
A configuration in mode NONE, or none at all, is not bound to the TPM: GO, with notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostseal.doctor.observe import HostState, audit_listings
from hostseal.errors import HostsealError
from hostseal.secureconfig.info import Mode
from hostseal.secureconfig.recoverykey import format_recovery_id, parse_recovery_key
from hostseal.secureconfig.slots import open_recovery_slots
from hostseal.secureconfig.store import Bundle

AFTER_SWAP = [
    "Keep the recovery key and the backup off this host until the swap is done.",
    "In the new board's firmware setup: enable the TPM 2.0 with the SHA-256 PCR bank and UEFI "
    "Secure Boot, as on the old board.",
    "Boot. The configuration will not unlock on the new TPM: run hostseal config unlock --to "
    "/run/hostseal/config --recovery-key-file FILE, which seals it to the new TPM (ESXi: "
    "Shift+O at the boot loader, append encryptionRecoveryKey=KEY, then /sbin/auto-backup.sh).",
    "Rotate the recovery key (hostseal recovery rotate), save the new one off the host, and "
    "take a new backup (hostseal config backup --out FILE).",
    "Re-register the host with the attestation service: before the swap an operator runs "
    "hostseal host reconnect NAME --reason ...; or after it, the new TPM's enrolment is a TPM "
    "change request that an operator accepts (hostseal host accept-tpm NAME --request ID "
    "--reason ...). A new TPM without a vendor certificate chain then waits for hostseal host "
    "approve NAME.",
]


@dataclass
class SwapItem:
    """One line of the checklist; ``todo`` says what is missing when it is not ok."""

    item: str
    label: str
    ok: bool
    detail: str
    todo: str = ""
    gating: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "item": self.item,
            "label": self.label,
            "ok": self.ok,
            "gating": self.gating,
            "detail": self.detail,
            "todo": self.todo,
        }


@dataclass
class SwapReport:
    items: list[SwapItem]
    after: list[str] = field(default_factory=list)

    @property
    def go(self) -> bool:
        return all(i.ok for i in self.items if i.gating)

    @property
    def missing(self) -> list[str]:
        return [i.todo for i in self.items if i.gating and not i.ok]

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": "GO" if self.go else "NO-GO",
            "go": self.go,
            "missing": self.missing,
            "items": [i.to_dict() for i in self.items],
            "after_the_swap": self.after,
        }


def _ids(bundle: Bundle) -> list[str]:
    return [format_recovery_id(s.recovery_id) for s in bundle.info.recovery_slots]


def _tpm_item(state: HostState) -> SwapItem:
    label = "TPM state"
    if state.tpm_error is not None or state.host is None:
        reason = state.tpm_error.message if state.tpm_error else "not read"
        return SwapItem("tpm", label, False, f"the TPM does not answer: {reason}", gating=False)
    t, sb = state.host.tpm, state.host.secure_boot
    secure = {True: "on", False: "off", None: "unknown"}[sb.enabled]
    bank = "active" if t.sha256_active else "NOT active"
    ek = state.ek_fingerprint[:16] + "…" if state.ek_fingerprint else "not read"
    return SwapItem(
        "tpm",
        label,
        True,
        f"TPM {t.family} by {t.vendor_id}, SHA-256 bank {bank}, Secure Boot {secure}, EK {ek}",
        gating=False,
    )


def _key_item(
    bundle: Bundle, state: HostState, key_text: str | None, key_source: str
) -> tuple[SwapItem, bytes | None]:
    label = "Recovery key saved off the host"
    ids = _ids(bundle)
    escrowed = [i for i in ids if i in state.agent.escrowed]
    proofs: list[str] = []
    problems: list[str] = []
    secret: bytes | None = None
    if ids and len(escrowed) == len(ids):
        proofs.append(f"escrowed with the attestation service ({', '.join(ids)})")
    if key_text is not None:
        try:
            secret = parse_recovery_key(key_text)
            _, slot = open_recovery_slots(bundle.info.recovery_slots, secret)
            proofs.append(f"the key in {key_source} opens recovery slot {slot.formatted_id}")
        except HostsealError as err:
            secret = None
            problems.append(
                f"the key in {key_source} does not open this configuration: {err.message}"
            )
    if proofs:
        return SwapItem("key-saved", label, True, "; ".join(proofs + problems)), secret
    shown = audit_listings(state.audit)
    listed = [f"{i} on {shown[i]}" for i in ids if i in shown]
    seen = (
        f"shown by 'hostseal recovery list' ({', '.join(listed)}), but not proven saved"
        if listed
        else "never escrowed and not checked"
    )
    return (
        SwapItem(
            "key-saved",
            label,
            False,
            "; ".join([*problems, seen]),
            "Save the recovery key off the host (hostseal recovery list) and check it here with "
            "--recovery-key-file FILE, or let the agent escrow it (hostseal agent run --once).",
        ),
        None,
    )


def _backup_item(bundle: Bundle, backup: Path | None, secret: bytes | None) -> SwapItem:
    label = "Configuration backed up"
    current = bundle.info.generation
    if backup is None:
        return SwapItem(
            "backup",
            label,
            False,
            "no backup was given to check (hostseal keeps no record of backups)",
            "Take a backup (hostseal config backup --out FILE), keep it off the host, and "
            "check it here with --backup FILE.",
        )
    retake = f"Take a new backup: hostseal config backup --out {backup}."
    try:
        raw = backup.read_bytes()
        copy = Bundle.parse(raw, str(backup))
    except OSError as err:
        return SwapItem("backup", label, False, f"cannot read {backup}: {err.strerror}", retake)
    except HostsealError as err:
        return SwapItem(
            "backup", label, False, f"{backup} is not a usable backup: {err.message}", retake
        )
    generation = copy.info.generation
    if raw != bundle.raw and (generation != current or _ids(copy) != _ids(bundle)):
        return SwapItem(
            "backup",
            label,
            False,
            f"{backup} is generation {generation}; the current configuration is generation "
            f"{current}",
            retake,
        )
    same = "identical to" if raw == bundle.raw else "the same generation as"
    detail = f"{backup} is {same} the current configuration (generation {current})"
    if secret is not None:
        try:
            open_recovery_slots(copy.info.recovery_slots, secret)
        except HostsealError as err:
            return SwapItem(
                "backup",
                label,
                False,
                f"{detail}, but the saved key does not open it: {err.message}",
                retake,
            )
        detail += "; the saved recovery key opens it"
    return SwapItem("backup", label, True, detail)


def before_board_swap(
    state: HostState,
    *,
    backup: Path | None = None,
    recovery_key_text: str | None = None,
    recovery_key_source: str = "the key file",
) -> SwapReport:
    """The checklist for ``state`` (observed with :func:`hostseal.doctor.observe.observe`)."""
    items = [_tpm_item(state)]
    bundle = state.bundle
    label = "Sealed configuration"
    if bundle is None:
        if state.bundle_error is not None and type(state.bundle_error).__name__ != "NoBundle":
            items.append(
                SwapItem(
                    "config",
                    label,
                    False,
                    f"cannot be read: {state.bundle_error.message}",
                    "Repair the bootbank first (hostseal doctor says how).",
                )
            )
            return SwapReport(items)
        items.append(
            SwapItem(
                "config", label, True, f"none in {state.bootbank}: nothing is bound to this TPM"
            )
        )
        return SwapReport(items)
    info = bundle.info
    if info.mode is Mode.NONE:
        items.append(
            SwapItem(
                "config",
                label,
                True,
                f"mode NONE (generation {info.generation}): not bound to the TPM; after the swap "
                "seal it to the new TPM with hostseal config set --mode tpm",
            )
        )
        return SwapReport(items)
    slot = info.tpm_slot
    assert slot is not None
    items.append(
        SwapItem(
            "config",
            label,
            True,
            f"mode TPM, generation {info.generation}, sealed to the TPM with EK "
            f"{slot.tpm_ek_fingerprint[:16]}…: after the swap it opens only with a recovery key",
        )
    )
    items.append(
        SwapItem(
            "unlock",
            "Unlocks on this boot",
            state.preflight.will_unlock is True,
            f"{state.preflight.verdict}: "
            + "; ".join(c.rstrip(".") for c in state.preflight.causes),
            gating=False,
        )
    )
    ids = _ids(bundle)
    items.append(
        SwapItem(
            "recovery-keys",
            "Recovery keys listed",
            bool(ids),
            f"{len(ids)} recovery key{'' if len(ids) == 1 else 's'}"
            + (f": {', '.join(ids)}" if ids else ""),
            "Create a recovery key while the TPM still unlocks: hostseal recovery rotate.",
        )
    )
    key_item, secret = _key_item(bundle, state, recovery_key_text, recovery_key_source)
    items.append(key_item)
    items.append(_backup_item(bundle, backup, secret))
    return SwapReport(items, list(AFTER_SWAP))
