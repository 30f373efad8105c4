"""Recovery-key escrow: keys stored envelope-encrypted, checked by KCV, read only with a reason.

The agent posts the host's recovery keys (``POST /v1/escrow``) and reports one KCV per recovery
slot with each attestation. The service holds a host's keys when, for every reported recovery ID,
it has an escrowed key with the same KCV; until then a TPM-mode host has the
``tpm-recovery-key-backup`` alarm. Escrowed keys are kept when a host is removed (its disks may
still need them) and when a key is rotated (an old configuration backup still opens with it).

Only an approved host escrows (not pending approval, not removed), and only the keys
its last evidence reported: each key's recovery ID and key check value must be among the host's
``recovery_key_checks``. Anything else is refused whole (:class:`EscrowRefused`), so an agent
cannot fill the database or ``escrow export`` with keys of its own making.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostseal.secureconfig.recoverykey import (
    format_recovery_id,
    format_recovery_key,
    key_check_value,
    parse_recovery_id,
    parse_recovery_key,
)
from hostseal.server import alarms
from hostseal.server.errors import NotFound, Unprocessable
from hostseal.server.serverkey import Sealed, ServerKey
from hostseal.server.storage.models import EscrowedKey, Host


class EscrowRefused(Unprocessable):
    """The host may not escrow these keys (it is not approved, or it did not report them)."""


ESCROWING = ("passed", "failed", "warning", "enrolled", "not-reporting")  # approved hosts


def _refused(message: str, remedy: str, status: int = 422) -> EscrowRefused:
    refused = EscrowRefused(message, remedy)
    refused.http_status = status
    return refused


def check_allowed(host: Host, keys: list[tuple[UUID, bytes]]) -> None:
    """Refuse (:class:`EscrowRefused`) unless the host is approved and reported every key: its
    recovery ID with this key's check value."""
    status = "removed" if host.removed_at is not None else host.status
    if status not in ESCROWING:
        raise _refused(
            f"Host {host.name!r} is {status}: the server escrows recovery keys only from "
            "approved hosts, so nothing was stored.",
            f"An operator approves the host first (hostseal host approve {host.name} --reason "
            "...); its agent then escrows the keys at its next report.",
            403,
        )
    reported = {rid: kcv for rid, kcv in _reported_checks(host) or []}
    if not reported:
        raise _refused(
            f"Host {host.name!r} has reported no recovery keys with its attestation evidence, "
            f"so the server escrows none of the {len(keys)} key(s) sent; nothing was stored.",
            "Let the agent report first (hostseal agent run --once sends the evidence, with a "
            "key check value per recovery key, then escrows).",
        )
    for number, (recovery_uuid, secret) in enumerate(keys, start=1):
        rid = format_recovery_id(recovery_uuid)
        if rid not in reported:
            raise _refused(
                f"Recovery ID {rid} (key {number}) is not among the recovery keys host "
                f"{host.name!r} reported with its last attestation; nothing was stored.",
                "Escrow the keys the host's configuration holds ('hostseal recovery list' on "
                "the host), after the agent has reported them (hostseal agent run --once).",
            )
        if key_check_value(recovery_uuid, secret) != reported[rid]:
            raise _refused(
                f"The key sent for recovery ID {rid} (key {number}) does not match the key "
                f"check value host {host.name!r} reported for it; nothing was stored.",
                "Escrow the key exactly as 'hostseal recovery list' shows it on the host; if the "
                "key was rotated, let the agent report again first.",
            )


@dataclass
class EscrowState:
    """``complete`` / ``missing`` / ``not-applicable`` (not TPM mode) / ``unknown`` (no report)."""

    state: str
    reported: int = 0
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    escrowed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reported": self.reported,
            "matched": self.matched,
            "missing": self.missing,
            "mismatched": self.mismatched,
            "escrowed": self.escrowed,
        }


def _context(host_name: str, recovery_id: str) -> bytes:
    return f"hostseal escrow v1|{host_name}|{recovery_id}".encode()


def _reported_checks(host: Host) -> list[tuple[str, str]] | None:
    config = host.secure_config
    if not config:
        return None
    checks = config.get("recovery_key_checks") or []
    return [(str(c["recovery_id"]), str(c["kcv"]).lower()) for c in checks]


def is_tpm_mode(host: Host) -> bool:
    config = host.secure_config or {}
    return str(config.get("mode", "")).upper() == "TPM"


def state_of(session: Session, host: Host) -> EscrowState:
    rows = list(session.scalars(select(EscrowedKey).where(EscrowedKey.host_name == host.name)))
    checks = _reported_checks(host)
    if checks is None:
        return EscrowState("unknown", escrowed=len(rows))
    if not is_tpm_mode(host):
        return EscrowState("not-applicable", reported=len(checks), escrowed=len(rows))
    held = {(r.recovery_id, r.kcv) for r in rows}
    held_ids = {r.recovery_id for r in rows}
    state = EscrowState("complete", reported=len(checks), escrowed=len(rows))
    for recovery_id, kcv in checks:
        canonical = format_recovery_id(parse_recovery_id(recovery_id))
        if (canonical, kcv) in held:
            state.matched += 1
        elif canonical in held_ids:
            state.mismatched.append(canonical)
        else:
            state.missing.append(canonical)
    if state.missing or state.mismatched or not checks:
        state.state = "missing"
    return state


def backup_problem(session: Session, host: Host) -> str | None:
    """Why the host's recovery keys are not all escrowed, or None when they are."""
    if not is_tpm_mode(host) or _reported_checks(host) is None:
        return None
    state = state_of(session, host)
    if state.state == "complete":
        return None
    if state.reported == 0:
        return (
            f"host {host.name!r} encrypts its configuration with the TPM but has no recovery "
            "key, so a TPM or system board replacement would leave a reinstall as the only way "
            "out"
        )
    parts = []
    if state.missing:
        parts.append(f"the server holds no key for recovery ID {', '.join(state.missing)}")
    if state.mismatched:
        parts.append(
            f"the escrowed key for {', '.join(state.mismatched)} does not match the host's key "
            "(the key check values differ: the key was rotated or mistyped)"
        )
    return (
        f"{state.matched} of the {state.reported} recovery keys of host {host.name!r} are "
        f"escrowed; " + "; ".join(parts)
    )


def reevaluate_alarm(session: Session, host: Host, now: datetime) -> None:
    """Raise or clear the host's recovery key backup alarm from the current facts."""
    if _reported_checks(host) is None:
        return  # the host never said: keep whatever state the alarm has
    problem = backup_problem(session, host)
    if problem is None:
        if is_tpm_mode(host):
            comment = "every recovery key the host reports is escrowed (key check values match)"
        else:
            comment = "the host no longer encrypts its configuration with the TPM"
        alarms.ensure_cleared(session, host, alarms.RECOVERY_KEY_BACKUP, comment, now)
    else:
        message = problem[0].upper() + problem[1:] + "."
        alarms.ensure_raised(session, host, alarms.RECOVERY_KEY_BACKUP, message, now)


def store_keys(
    session: Session,
    server_key: ServerKey,
    host: Host,
    keys: list[tuple[str, str]],
    *,
    by: str,
    now: datetime,
) -> tuple[int, list[str]]:
    """Escrow ``(recovery_id, key)`` pairs of an approved host that reported them
    (:func:`check_allowed`); return how many are held and the new IDs."""
    parsed: list[tuple[UUID, bytes]] = []
    for number, (recovery_id, key) in enumerate(keys, start=1):
        try:
            parsed.append((parse_recovery_id(recovery_id), parse_recovery_key(key)))
        except Exception as exc:
            message = getattr(exc, "message", str(exc))
            raise Unprocessable(
                f"Key {number} cannot be escrowed: {message}",
                "Send the recovery IDs and keys exactly as 'hostseal recovery list' shows them.",
            ) from exc
    if not parsed:
        raise Unprocessable("No recovery keys were sent.", "Send at least one key.")
    check_allowed(host, parsed)
    new: list[str] = []
    for recovery_uuid, secret in parsed:
        rid = format_recovery_id(recovery_uuid)
        kcv = key_check_value(recovery_uuid, secret)
        exists = session.scalar(
            select(EscrowedKey).where(
                EscrowedKey.host_name == host.name,
                EscrowedKey.recovery_id == rid,
                EscrowedKey.kcv == kcv,
            )
        )
        if exists is not None:
            continue
        sealed = server_key.seal(secret, _context(host.name, rid))
        session.add(
            EscrowedKey(
                host_name=host.name,
                recovery_id=rid,
                kcv=kcv,
                server_key_id=sealed.server_key_id,
                wrapped_data_key=sealed.wrapped_data_key,
                ciphertext=sealed.ciphertext,
                escrowed_at=now,
                escrowed_by=by,
            )
        )
        new.append(rid)
    session.flush()
    reevaluate_alarm(session, host, now)
    return len(parsed), new


def _reported(session: Session, host_name: str) -> set[tuple[str, str]]:
    host = session.scalar(select(Host).where(Host.name == host_name, Host.removed_at.is_(None)))
    checks = _reported_checks(host) if host is not None else None
    out = set()
    for recovery_id, kcv in checks or []:
        out.add((format_recovery_id(parse_recovery_id(recovery_id)), kcv))
    return out


def read_keys(session: Session, server_key: ServerKey, host_name: str) -> list[dict[str, Any]]:
    """The host's escrowed keys in clear (the caller audits the read); 404 when there are none."""
    rows = list(
        session.scalars(
            select(EscrowedKey)
            .where(EscrowedKey.host_name == host_name)
            .order_by(EscrowedKey.escrowed_at, EscrowedKey.id)
        )
    )
    if not rows:
        raise NotFound(
            f"The server holds no recovery key of host {host_name!r}.",
            "Check the host name (hostseal host list); the agent escrows the keys of TPM-mode "
            "hosts when it reports.",
        )
    reported = _reported(session, host_name)
    return [_clear(server_key, row, reported) for row in rows]


def _clear(
    server_key: ServerKey, row: EscrowedKey, reported: set[tuple[str, str]]
) -> dict[str, Any]:
    sealed = Sealed(row.wrapped_data_key, row.ciphertext, row.server_key_id)
    secret = server_key.open(sealed, _context(row.host_name, row.recovery_id))
    return {
        "recovery_id": row.recovery_id,
        "key": format_recovery_key(secret),
        "kcv": row.kcv,
        "escrowed_at": row.escrowed_at.isoformat(),
        "escrowed_by": row.escrowed_by,
        "current": (row.recovery_id, row.kcv) in reported,
    }


def export_all(session: Session, server_key: ServerKey) -> list[dict[str, Any]]:
    """Every escrowed key, grouped by host."""
    names = sorted(set(session.scalars(select(EscrowedKey.host_name))))
    return [{"host": name, "keys": read_keys(session, server_key, name)} for name in names]
