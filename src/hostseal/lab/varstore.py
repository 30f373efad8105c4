"""OVMF's variable store (the ``OVMF_VARS*.fd`` file): read it and turn Secure Boot on or off.

An operator turns Secure Boot off in the firmware setup ("Attempt Secure Boot" in OVMF's
Secure Boot Configuration), which stores ``SecureBootEnable`` = 0; the keys (PK, KEK, db, dbx)
stay enrolled. At the next boot the firmware derives the ``SecureBoot`` variable from it:
Secure Boot is on when a PK is enrolled and ``SecureBootEnable`` is 1 (or absent). This module
makes the same change to the file while the VM is off: :func:`set_secure_boot`.

The file is a firmware volume (``_FVH``) holding an authenticated variable store: a 28-byte
store header, then variables, each a 60-byte header (``0x55AA``, state, attributes, monotonic
count, time stamp, public key index, name size, data size, vendor GUID), its UTF-16 name and its
data, 4-byte aligned. A variable is live when its state is ``VAR_ADDED`` (0x3F) or that with the
in-deleted-transition bit cleared (0x3E); it is deleted by clearing the ``VAR_DELETED`` bit.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write

SECURE_BOOT_ENABLE_GUID = uuid.UUID("f0a30bc7-af08-4556-99c4-001009c93a44")
SECURE_BOOT_ENABLE = "SecureBootEnable"
_AUTH_VARIABLE_STORE = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792")
_START_ID = 0x55AA
_VAR_ADDED = 0x3F
_VAR_DELETED = 0xFD
_LIVE_STATES = (_VAR_ADDED, _VAR_ADDED & 0xFE)
_HEADER = struct.Struct("<HBBIQ16sIII16s")  # 60 bytes
_STORE_HEADER = 28
_NV_BS = 0x3  # EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS


class VarstoreError(HostsealError):
    """The firmware's variable store file is not what the lab expects."""


@dataclass(frozen=True)
class Variable:
    """A live variable of the store and where its header starts in the file."""

    offset: int
    name: str
    guid: uuid.UUID
    attributes: int
    data: bytes


def _align(n: int) -> int:
    return (n + 3) & ~3


def _store_bounds(raw: bytes, path: Path) -> tuple[int, int]:
    """(offset of the first variable, end of the store)."""
    if raw[40:44] != b"_FVH":
        raise VarstoreError(
            f"{path} is not an OVMF variable store (no firmware volume header).",
            "Use a copy of /usr/share/OVMF/OVMF_VARS_4M.ms.fd.",
        )
    header_length = struct.unpack_from("<H", raw, 48)[0]
    if uuid.UUID(bytes_le=raw[header_length : header_length + 16]) != _AUTH_VARIABLE_STORE:
        raise VarstoreError(
            f"{path} holds no authenticated variable store.",
            "Use a copy of /usr/share/OVMF/OVMF_VARS_4M.ms.fd (a Secure Boot capable store).",
        )
    size = struct.unpack_from("<I", raw, header_length + 16)[0]
    return _align(header_length + _STORE_HEADER), header_length + size


def _walk(raw: bytes, path: Path) -> tuple[list[Variable], int, int]:
    """(live variables, offset just past the last variable, end of the store)."""
    offset, end = _store_bounds(raw, path)
    live: list[Variable] = []
    while offset + _HEADER.size <= end:
        start_id, state, _r, attributes, _mc, _ts, _pk, name_size, data_size, guid = (
            _HEADER.unpack_from(raw, offset)
        )
        if start_id != _START_ID:
            break
        name_at = offset + _HEADER.size
        if state in _LIVE_STATES:
            name = raw[name_at : name_at + name_size].decode("utf-16-le").rstrip("\0")
            data = raw[name_at + name_size : name_at + name_size + data_size]
            live.append(Variable(offset, name, uuid.UUID(bytes_le=guid), attributes, data))
        offset = _align(name_at + name_size + data_size)
    return live, offset, end


def variables(path: Path) -> list[Variable]:
    """The live variables of the store at ``path``."""
    return _walk(path.read_bytes(), path)[0]


def _find(found: list[Variable], name: str, guid: uuid.UUID) -> Variable | None:
    return next((v for v in found if v.name == name and v.guid == guid), None)


def secure_boot_enabled(path: Path) -> bool:
    """Whether the store asks for Secure Boot: a PK enrolled and SecureBootEnable not 0."""
    found = variables(path)
    has_pk = any(v.name == "PK" and v.data for v in found)
    enable = _find(found, SECURE_BOOT_ENABLE, SECURE_BOOT_ENABLE_GUID)
    return has_pk and (enable is None or enable.data[:1] != b"\0")


def set_secure_boot(path: Path, enabled: bool) -> None:
    """Store ``SecureBootEnable`` = 1 or 0, as the firmware setup does (atomically)."""
    raw = bytearray(path.read_bytes())
    found, free, end = _walk(bytes(raw), path)
    if not any(v.name == "PK" and v.data for v in found):
        raise VarstoreError(
            f"{path} has no Platform Key enrolled: Secure Boot cannot be turned on or off.",
            "Use a copy of /usr/share/OVMF/OVMF_VARS_4M.ms.fd (Microsoft keys enrolled).",
        )
    value = b"\x01" if enabled else b"\x00"
    current = _find(found, SECURE_BOOT_ENABLE, SECURE_BOOT_ENABLE_GUID)
    if current is not None and len(current.data) == 1:
        name_size = _HEADER.unpack_from(raw, current.offset)[7]
        raw[current.offset + _HEADER.size + name_size] = value[0]
    else:
        if current is not None:  # a malformed one: delete it, then add ours
            raw[current.offset + 2] &= _VAR_DELETED
        name = (SECURE_BOOT_ENABLE + "\0").encode("utf-16-le")
        header = _HEADER.pack(
            _START_ID,
            _VAR_ADDED,
            0,
            _NV_BS,
            0,
            bytes(16),
            0,
            len(name),
            len(value),
            SECURE_BOOT_ENABLE_GUID.bytes_le,
        )
        record = header + name + value
        if free + len(record) > end:
            raise VarstoreError(
                f"The variable store {path} is full.",
                "Start the host from a fresh copy of /usr/share/OVMF/OVMF_VARS_4M.ms.fd.",
            )
        raw[free : free + len(record)] = record
    atomic_write(path, bytes(raw), mode=0o600)
