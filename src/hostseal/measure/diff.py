"""Explain how two boots differ: the log recorded at seal time against this boot's log.

Per PCR, the extended events of both logs are aligned (by event type and digest) and every
difference becomes a :class:`LogChange` in the operator's terms. ``kind`` is a stable id:

=============================  ===============================================================
secure_boot_disabled/enabled   the SecureBoot variable (PCR 7) went from on to off / off to on
secure_boot_changed            the SecureBoot variable changed otherwise (e.g. became unreadable)
secure_boot_db_changed         PK, KEK, db or dbx changed (PCR 7)
secure_boot_authority_changed  a different certificate authorised a component (PCR 7)
boot_application_changed       same boot application, different digest (PCR 4)
boot_application_added/removed a boot application appeared / disappeared
kernel_cmdline_changed         the kernel command line changed (PCR 8 or 12)
firmware_changed               S-CRTM version, firmware blob or driver changed (PCR 0, 2)
boot_variable_changed          BootOrder or a Boot#### variable changed (PCR 1)
separator_changed              a separator changed (e.g. the firmware signalled an error)
startup_locality_changed       the TPM started at another locality (PCR 0's initial value)
event_changed/added/removed    any other event
=============================  ===============================================================

Events are aligned by their digests, which replay proves; what a message quotes from event data
is marked when no digest covers it (a boot application's path: "(path unverified)") or when it
does not match its measurement ("FORGED"), as :func:`~hostseal.measure.describe.describe` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher

from hostseal.measure import decode, efi
from hostseal.measure.binding import binding
from hostseal.measure.describe import describe
from hostseal.measure.events import Event, EventLog, EventType

_BANK_PREFERENCE = ("sha256", "sha384", "sha512", "sha1", "sm3_256")
_FIRMWARE_TYPES = frozenset(
    {
        EventType.EV_S_CRTM_VERSION,
        EventType.EV_S_CRTM_CONTENTS,
        EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
        EventType.EV_POST_CODE,
        EventType.EV_POST_CODE2,
        EventType.EV_CPU_MICROCODE,
        EventType.EV_EFI_BOOT_SERVICES_DRIVER,
        EventType.EV_EFI_RUNTIME_SERVICES_DRIVER,
        EventType.EV_EFI_HCRTM_EVENT,
    }
)
_APP = EventType.EV_EFI_BOOT_SERVICES_APPLICATION


@dataclass(frozen=True, slots=True)
class LogChange:
    """One difference between two logs, for people (``message``) and programs (``kind``)."""

    pcr: int
    kind: str
    message: str
    old: tuple[Event, ...] = ()
    new: tuple[Event, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "pcr": self.pcr,
            "kind": self.kind,
            "message": self.message,
            "old_events": [e.index for e in self.old],
            "new_events": [e.index for e in self.new],
        }


_ChangeFactory = Callable[[str, str], LogChange]


def diff_logs(old: EventLog, new: EventLog) -> list[LogChange]:
    """The differences between ``old`` and ``new``, by PCR; empty when the boots match."""
    bank = next((b for b in _BANK_PREFERENCE if b in old.banks and b in new.banks), None)
    changes: list[LogChange] = []
    if old.startup_locality != new.startup_locality:
        changes.append(
            LogChange(
                0,
                "startup_locality_changed",
                f"PCR 0: the TPM started at locality {old.startup_locality or 0}, "
                f"now at {new.startup_locality or 0}",
            )
        )
    pcrs = sorted(set(old.pcrs()) | set(new.pcrs()))
    for pcr in pcrs:
        before = old.events_of_pcr(pcr)
        after = new.events_of_pcr(pcr)
        changes.extend(_diff_pcr(pcr, before, after, bank))
    return changes


def _key(event: Event, bank: str | None) -> tuple[int, bytes]:
    if bank is not None and bank in event.digests:
        return (event.event_type, event.digests[bank])
    return (event.event_type, event.data)


def _diff_pcr(
    pcr: int, before: list[Event], after: list[Event], bank: str | None
) -> list[LogChange]:
    old_keys = [_key(e, bank) for e in before]
    new_keys = [_key(e, bank) for e in after]
    if old_keys == new_keys:
        return []
    changes: list[LogChange] = []
    matcher = SequenceMatcher(a=old_keys, b=new_keys, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        removed, added = before[i1:i2], after[j1:j2]
        for old_event, new_event in _pair(removed, added):
            changes.append(_classify(pcr, old_event, new_event))
    return changes


def _pair(removed: list[Event], added: list[Event]) -> list[tuple[Event | None, Event | None]]:
    """Pair removed and added events that are the same thing changed (same type, and for
    variables the same name, for applications the same path when one matches)."""
    pairs: list[tuple[Event | None, Event | None]] = []
    unmatched = list(added)
    for old_event in removed:
        match = next((e for e in unmatched if _same_subject(old_event, e)), None)
        if match is None:
            match = next((e for e in unmatched if e.event_type == old_event.event_type), None)
        if match is not None:
            unmatched.remove(match)
        pairs.append((old_event, match))
    pairs.extend((None, e) for e in unmatched)
    return pairs


def _subject(event: Event) -> str | None:
    t = event.event_type
    try:
        if t in (
            EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
            EventType.EV_EFI_VARIABLE_BOOT,
            EventType.EV_EFI_VARIABLE_BOOT2,
            EventType.EV_EFI_VARIABLE_AUTHORITY,
        ):
            return efi.decode_variable(event.data).name
        if t == _APP:
            return efi.decode_image_load(event.data).file_path
    except ValueError:
        return None
    if decode.cmdline_of(event) is not None:
        return "kernel_cmdline"
    return None


def _same_subject(a: Event, b: Event) -> bool:
    if a.event_type != b.event_type:
        return False
    subject = _subject(a)
    return subject is not None and subject == _subject(b)


def _classify(pcr: int, old: Event | None, new: Event | None) -> LogChange:
    event = new if new is not None else old
    assert event is not None
    olds = (old,) if old is not None else ()
    news = (new,) if new is not None else ()
    subject = _subject(event)
    t = event.event_type

    def change(kind: str, text: str) -> LogChange:
        return LogChange(pcr, kind, f"PCR {pcr}: {text}", olds, news)

    if t == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG and subject == "SecureBoot":
        was, now = _secure_boot(old), _secure_boot(new)
        if was == "enabled" and now == "disabled":
            return change("secure_boot_disabled", "Secure Boot went from enabled to disabled")
        if was == "disabled" and now == "enabled":
            return change("secure_boot_enabled", "Secure Boot went from disabled to enabled")
        return change("secure_boot_changed", f"Secure Boot state went from {was} to {now}")
    if t == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG and subject in decode.SECURE_BOOT_DATABASES:
        return change(
            "secure_boot_db_changed",
            f"Secure Boot database {subject} changed ({_db(old)} -> {_db(new)})",
        )
    if t == EventType.EV_EFI_VARIABLE_AUTHORITY:
        return change("secure_boot_authority_changed", _was_now("Secure Boot authority", old, new))
    if t == _APP:
        return _application(change, old, new)
    if subject == "kernel_cmdline":
        was_text = decode.cmdline_of(old) if old is not None else None
        now_text = decode.cmdline_of(new) if new is not None else None
        return change(
            "kernel_cmdline_changed",
            f"kernel command line changed from {_quoted(was_text, old)} to "
            f"{_quoted(now_text, new)}",
        )
    if t == EventType.EV_S_CRTM_VERSION and old is not None and new is not None:
        was_version = decode.version_text(old.data) + _label(old)
        now_version = decode.version_text(new.data) + _label(new)
        return change(
            "firmware_changed", f"firmware version changed from '{was_version}' to '{now_version}'"
        )
    if t in _FIRMWARE_TYPES and pcr in (0, 2):
        return change("firmware_changed", _was_now("firmware", old, new))
    if t in (EventType.EV_EFI_VARIABLE_BOOT, EventType.EV_EFI_VARIABLE_BOOT2):
        return change("boot_variable_changed", _was_now("boot variable", old, new))
    if t == EventType.EV_SEPARATOR:
        return change("separator_changed", _was_now("separator", old, new))
    if old is None:
        return change("event_added", f"event added: {event.type_name} {describe(event)}")
    if new is None:
        return change("event_removed", f"event removed: {event.type_name} {describe(event)}")
    return change("event_changed", _was_now(event.type_name, old, new))


def _was_now(what: str, old: Event | None, new: Event | None) -> str:
    if old is None and new is not None:
        return f"{what} added: {describe(new)}"
    if new is None and old is not None:
        return f"{what} removed: {describe(old)}"
    assert old is not None and new is not None
    was, now = describe(old), describe(new)
    if was == now:
        return f"{what} {now} changed digest"
    return f"{what} changed from '{was}' to '{now}'"


def _label(event: Event) -> str:
    label = binding(event).label()
    return f" ({label})" if label else ""


def _quoted(text: str | None, event: Event | None = None) -> str:
    if text is None:
        return "(none)"
    return f"'{text}'" + (_label(event) if event is not None else "")


def _secure_boot(event: Event | None) -> str:
    if event is None:
        return "not measured"
    try:
        value = efi.decode_variable(event.data).data
    except ValueError:
        return "unreadable"
    bound = binding(event)
    if bound.forged:
        return "forged (the event data does not match its measurement)"
    if not bound.fully_verified:
        return "unverified"
    return {b"\x01": "enabled", b"\x00": "disabled", b"": "disabled"}.get(value, "unreadable")


def _db(event: Event | None) -> str:
    if event is None:
        return "absent"
    text = describe(event)
    return text.split(": ", 1)[1] if ": " in text else text


def _application(change: _ChangeFactory, old: Event | None, new: Event | None) -> LogChange:
    old_app = _app_name(old)
    new_app = _app_name(new)
    if old is None:
        return change("boot_application_added", f"boot application {new_app} added")
    if new is None:
        return change("boot_application_removed", f"boot application {old_app} removed")
    if old_app == new_app:
        return change("boot_application_changed", f"boot application {new_app} changed digest")
    return change(
        "boot_application_changed", f"boot application changed from {old_app} to {new_app}"
    )


def _app_name(event: Event | None) -> str:
    if event is None:
        return "(none)"
    try:
        image = efi.decode_image_load(event.data)
    except ValueError:
        return "(undecodable image event)"
    name = image.file_path or image.device_path or "(no device path)"
    return f"{name} (path unverified)"
