"""One line of text per event, for ``hostseal eventlog show``, the dashboard and diff messages.

What an event records comes from its data; the line says when that data is not proven by the
event's digest (:mod:`hostseal.measure.binding`): "(unverified)" where the format does not hash
the data (paths of boot applications, firmware blob descriptions), "(name unverified)" where the
firmware hashed a variable's value alone, and "(FORGED: the event data does not match its
measurement)" where the digest should cover the data and does not.
"""

from __future__ import annotations

import struct

from hostseal.measure import decode, efi
from hostseal.measure.binding import binding
from hostseal.measure.events import Event, EventType, algorithm_name
from hostseal.measure.parse import SPEC_ID_SIGNATURE, STARTUP_LOCALITY_SIGNATURE

_MAX_TEXT = 200
_MODE_VARIABLES = ("SecureBoot", "DeployedMode", "AuditMode")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _printable(data: bytes) -> str | None:
    """The data as one line of text if it is (NUL-terminated) ASCII/UTF-8 or UTF-16 text,
    else None. Line breaks and tabs are shown as ``\\n`` and ``\\t``."""
    stripped = data.rstrip(b"\0")
    if not stripped:
        return None
    text: str | None = None
    if len(data) >= 2 and data[1:2] == b"\0":
        text = efi.utf16_text(data)
    else:
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = text.replace("\r", "").replace("\n", "\\n").replace("\t", "\\t")
    return text if text and text.isprintable() else None


def _hex(data: bytes) -> str:
    if not data:
        return "(no data)"
    preview = data[:24].hex()
    return f"{len(data)} bytes: {preview}{'…' if len(data) > 24 else ''}"


def describe(event: Event) -> str:
    """What the event records, in one line, marked when its data is not proven by its digest;
    never raises (undecodable data says so)."""
    try:
        text = _clip(_describe(event))
    except (ValueError, struct.error, IndexError) as err:
        text = f"<malformed {event.type_name} data: {err}>"
    return text + _mark(event)


def _mark(event: Event) -> str:
    if not event.extended or event.event_type == EventType.EV_EFI_HCRTM_EVENT:
        return ""  # EV_NO_ACTION: read by the parser and replay; H-CRTM: no data shown
    if event.event_type == EventType.EV_S_CRTM_VERSION and decode.data_verified(event) is False:
        return ""  # said already: "(data does not match its digest)"
    label = binding(event).label()
    return f" ({label})" if label else ""


def _describe(event: Event) -> str:
    t, data = event.event_type, event.data
    if t == EventType.EV_NO_ACTION:
        return _no_action(data)
    if t == EventType.EV_SEPARATOR:
        kind = "error separator" if data == decode.ERROR_SEPARATOR_DATA else "separator"
        if data not in (
            decode.SEPARATOR_DATA,
            decode.ERROR_SEPARATOR_DATA,
            decode.LEGACY_SEPARATOR_DATA,
        ):
            kind = f"separator with unusual data {data.hex()}"
        return kind
    if t == EventType.EV_S_CRTM_VERSION:
        return f"S-CRTM version {decode.version_text(data)!r}" + _unverified(event)
    if t in (
        EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    ) or (t == EventType.EV_POST_CODE and len(data) == 16):
        described = t == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2
        desc, base, length = efi.decode_blob(data, described=described)
        label = f"firmware blob {desc!r}" if desc else "firmware blob"
        return f"{label} at 0x{base:x}, {length} bytes"
    if t in (
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType.EV_EFI_VARIABLE_BOOT,
        EventType.EV_EFI_VARIABLE_BOOT2,
        EventType.EV_EFI_VARIABLE_AUTHORITY,
    ):
        return _variable(event)
    if t in (
        EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
        EventType.EV_EFI_BOOT_SERVICES_DRIVER,
        EventType.EV_EFI_RUNTIME_SERVICES_DRIVER,
    ):
        image = efi.decode_image_load(data)
        where = image.file_path or image.device_path or "(no device path)"
        return f"{where} ({image.length} bytes)"
    if t in (EventType.EV_EFI_GPT_EVENT, EventType.EV_EFI_GPT_EVENT2) and len(data) >= 100:
        disk = efi.guid_from(data[56:72])
        (partitions,) = struct.unpack_from("<Q", data, 92)
        return f"GPT of disk {disk}, {partitions} partitions"
    if t in (EventType.EV_EFI_HANDOFF_TABLES, EventType.EV_EFI_HANDOFF_TABLES2):
        return _handoff(data, t == EventType.EV_EFI_HANDOFF_TABLES2)
    if t == EventType.EV_EVENT_TAG and len(data) >= 8:
        tag, size = struct.unpack_from("<II", data, 0)
        body = data[8 : 8 + size]
        return f"tagged event 0x{tag:08x}: {_printable(body) or _hex(body)}"
    if t == EventType.EV_EFI_HCRTM_EVENT:
        return "H-CRTM measurement"
    text = _printable(data)
    return text if text is not None else _hex(data)


def _unverified(event: Event) -> str:
    return " (data does not match its digest)" if decode.data_verified(event) is False else ""


def _no_action(data: bytes) -> str:
    if data.startswith(SPEC_ID_SIGNATURE):
        count = struct.unpack_from("<I", data, 24)[0] if len(data) >= 28 else 0
        ids = [
            algorithm_name(struct.unpack_from("<H", data, 28 + 4 * i)[0])
            for i in range(min(count, (len(data) - 28) // 4))
        ]
        return f"Spec ID Event03: banks {', '.join(ids)}"
    if data.startswith(STARTUP_LOCALITY_SIGNATURE) and len(data) > 16:
        return f"StartupLocality {data[16]}"
    signature = data[:16].split(b"\0")[0]
    text = _printable(signature)
    return text if text else _hex(data)


def _variable(event: Event) -> str:
    variable = efi.decode_variable(event.data)
    name, value = variable.name, variable.data
    authority = event.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY
    if variable.guid == efi.EFI_GLOBAL_VARIABLE and name in _MODE_VARIABLES:
        state = {b"\x01": "enabled", b"\x00": "disabled"}.get(value, f"<{value.hex() or 'empty'}>")
        return f"{name} = {state}"
    if name in decode.SECURE_BOOT_DATABASES and not authority:
        entries = efi.decode_signature_lists(value)
        if not entries:
            return f"{name}: empty"
        certs = sum(1 for e in entries if e.type in efi.CERTIFICATE_TYPES)
        hashes = decode.count_text(len(entries) - certs, "hash")
        return f"{name}: {decode.count_text(certs, 'certificate')}, {hashes}"
    if name == "BootOrder" and len(value) % 2 == 0:
        order = [f"{v:04X}" for v in struct.unpack(f"<{len(value) // 2}H", value)]
        return f"BootOrder = {','.join(order)}"
    if name.startswith("Boot") and len(name) == 8:
        option = efi.decode_load_option(value)
        return f"{name}: {option.description!r} {option.file_path or option.device_path}"
    if authority and name in ("db", "MokList") and len(value) >= 16:
        owner = efi.guid_from(value[:16])
        return f"{name} entry of {owner} ({len(value) - 16} bytes)"
    text = _printable(value)
    return f"{name} = {text}" if text else f"{name} ({len(value)} bytes)"


def _handoff(data: bytes, described: bool) -> str:
    off = 0
    label = ""
    if described:
        size = data[0]
        label = data[1 : 1 + size].decode("ascii", errors="replace").rstrip("\0") + ": "
        off = 1 + size
    (count,) = struct.unpack_from("<Q", data, off)
    tables = []
    for i in range(min(count, (len(data) - off - 8) // 24)):
        tables.append(str(efi.guid_from(data[off + 8 + 24 * i : off + 24 + 24 * i])))
    return f"{label}{count} configuration tables ({', '.join(tables)})"
