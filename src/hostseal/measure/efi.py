"""UEFI structures found in event data: decoders and the encoders the lab needs.

UEFI_VARIABLE_DATA, EFI_SIGNATURE_LIST, UEFI_IMAGE_LOAD_EVENT with its device path,
EFI_LOAD_OPTION, firmware blobs. Decoders raise :class:`ValueError` with a short reason on
malformed data; :mod:`hostseal.measure.decode` turns it into an :class:`EventLogError` with the
event's position.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SHIM_LOCK_GUID = uuid.UUID("605dab50-e046-4300-abb6-3dd810dd8b23")
EFI_CERT_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")

SIGNATURE_TYPES: dict[uuid.UUID, str] = {
    EFI_CERT_X509: "x509",
    EFI_CERT_SHA256: "sha256",
    uuid.UUID("826ca512-cf10-4ac9-b187-be01496631bd"): "sha1",
    uuid.UUID("0b6e5233-a65c-44c9-9407-d9ab83bfc8bd"): "sha224",
    uuid.UUID("ff3e5307-9fd0-48c9-85f1-8ad56c701e01"): "sha384",
    uuid.UUID("093e0fae-a6c4-4f50-9f1b-d41e2b89c19a"): "sha512",
    uuid.UUID("3c5766e8-269c-4e34-aa14-ed776e85b3b6"): "rsa2048",
    uuid.UUID("3bd2a492-96c0-4079-b420-fcf98ef103ed"): "x509_sha256",
    uuid.UUID("7076876e-80c2-4ee6-aad2-28b349a6865b"): "x509_sha384",
    uuid.UUID("446dbf63-2502-4cda-bcfa-2465d2b0fe9d"): "x509_sha512",
}
CERTIFICATE_TYPES = frozenset({"x509", "rsa2048"})

_VARIABLE_HEADER = struct.Struct("<16sQQ")
_SIGNATURE_LIST_HEADER = struct.Struct("<16sIII")
_IMAGE_LOAD_HEADER = struct.Struct("<QQQQ")
_NODE_HEADER = struct.Struct("<BBH")
_BLOB = struct.Struct("<QQ")
END_OF_DEVICE_PATH = b"\x7f\xff\x04\x00"


def guid_from(raw: bytes) -> uuid.UUID:
    """An EFI_GUID (mixed-endian, as UEFI stores it) as a :class:`uuid.UUID`."""
    return uuid.UUID(bytes_le=bytes(raw))


def utf16_text(raw: bytes) -> str:
    """UTF-16LE text up to the first NUL character; undecodable units become U+FFFD."""
    if len(raw) % 2:
        raw = raw[:-1]
    text = raw.decode("utf-16-le", errors="replace")
    end = text.find("\0")
    return text if end < 0 else text[:end]


# --- UEFI_VARIABLE_DATA ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EfiVariable:
    """A measured UEFI variable: vendor GUID, name and value."""

    guid: uuid.UUID
    name: str
    data: bytes


def decode_variable(raw: bytes) -> EfiVariable:
    """Decode UEFI_VARIABLE_DATA (VariableName GUID, name length, data length, name, data)."""
    if len(raw) < _VARIABLE_HEADER.size:
        raise ValueError(f"UEFI_VARIABLE_DATA of {len(raw)} bytes is shorter than its header (32)")
    guid, name_chars, data_len = _VARIABLE_HEADER.unpack_from(raw, 0)
    off = _VARIABLE_HEADER.size
    left = len(raw) - off
    if name_chars * 2 > left:
        raise ValueError(
            f"variable name of {name_chars} characters runs past the event data ({left} bytes left)"
        )
    name = utf16_text(raw[off : off + name_chars * 2])
    off += name_chars * 2
    left = len(raw) - off
    if data_len > left:
        raise ValueError(
            f"variable {name} claims {data_len} bytes of data but the event has {left} left"
        )
    return EfiVariable(guid_from(guid), name, raw[off : off + data_len])


def efi_variable_data(guid: uuid.UUID, name: str, data: bytes) -> bytes:
    """Encode UEFI_VARIABLE_DATA, the event data of EV_EFI_VARIABLE_* events."""
    encoded_name = name.encode("utf-16-le")
    return (
        _VARIABLE_HEADER.pack(guid.bytes_le, len(encoded_name) // 2, len(data))
        + encoded_name
        + data
    )


# --- EFI_SIGNATURE_LIST ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA: its list's type ("x509", "sha256", ...), owner and payload."""

    type: str
    owner: uuid.UUID
    data: bytes


def decode_signature_lists(raw: bytes) -> list[SignatureEntry]:
    """The entries of a sequence of EFI_SIGNATURE_LISTs (the value of PK, KEK, db, dbx)."""
    entries: list[SignatureEntry] = []
    off = 0
    n = len(raw)
    while off < n:
        if n - off < _SIGNATURE_LIST_HEADER.size:
            raise ValueError(f"truncated EFI_SIGNATURE_LIST header at byte {off}")
        sig_type, list_size, header_size, sig_size = _SIGNATURE_LIST_HEADER.unpack_from(raw, off)
        body = list_size - _SIGNATURE_LIST_HEADER.size - header_size
        if list_size > n - off or body < 0:
            raise ValueError(f"EFI_SIGNATURE_LIST at byte {off} has an impossible size {list_size}")
        if sig_size < 16 or body % sig_size:
            raise ValueError(
                f"EFI_SIGNATURE_LIST at byte {off}: {body} bytes are not a whole number of "
                f"{sig_size}-byte signatures"
            )
        type_uuid = guid_from(sig_type)
        kind = SIGNATURE_TYPES.get(type_uuid, str(type_uuid))
        p = off + _SIGNATURE_LIST_HEADER.size + header_size
        end = off + list_size
        while p < end:
            entries.append(
                SignatureEntry(kind, guid_from(raw[p : p + 16]), raw[p + 16 : p + sig_size])
            )
            p += sig_size
        off = end
    return entries


# --- device paths and UEFI_IMAGE_LOAD_EVENT ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT: where the image was loaded and the device path it came from."""

    location: int
    length: int
    link_time_address: int
    device_path: str
    file_path: str | None


def decode_image_load(raw: bytes) -> ImageLoad:
    """Decode UEFI_IMAGE_LOAD_EVENT (EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER events)."""
    if len(raw) < _IMAGE_LOAD_HEADER.size:
        raise ValueError(f"UEFI_IMAGE_LOAD_EVENT of {len(raw)} bytes is shorter than 32")
    location, length, link, path_len = _IMAGE_LOAD_HEADER.unpack_from(raw, 0)
    left = len(raw) - _IMAGE_LOAD_HEADER.size
    if path_len > left:
        raise ValueError(f"device path of {path_len} bytes runs past the event ({left} left)")
    path = raw[_IMAGE_LOAD_HEADER.size : _IMAGE_LOAD_HEADER.size + path_len]
    text, file_path = device_path_text(path)
    return ImageLoad(location, length, link, text, file_path)


def image_load_event(path: str, image_length: int, location: int = 0) -> bytes:
    """Encode UEFI_IMAGE_LOAD_EVENT with a device path of one Media File Path node."""
    name = path.encode("utf-16-le") + b"\0\0"
    device_path = _NODE_HEADER.pack(4, 4, 4 + len(name)) + name + END_OF_DEVICE_PATH
    return _IMAGE_LOAD_HEADER.pack(location, image_length, 0, len(device_path)) + device_path


def device_path_text(raw: bytes) -> tuple[str, str | None]:
    """A device path as UEFI text (``PciRoot(0x0)/Pci(0x3,0x0)/.../File(\\EFI\\BOOT\\X.EFI)``),
    and the file path of its last File node (None if it has none)."""
    nodes: list[str] = []
    files: list[str] = []
    off = 0
    n = len(raw)
    while off < n:
        if n - off < 4:
            raise ValueError(f"truncated device path node at byte {off}")
        kind, sub, length = _NODE_HEADER.unpack_from(raw, off)
        if length < 4 or length > n - off:
            raise ValueError(f"device path node at byte {off} has an impossible length {length}")
        body = raw[off + 4 : off + length]
        off += length
        if kind == 0x7F:
            if sub == 0xFF:
                break
            nodes.append(",")  # end of this instance, another follows
            continue
        if kind == 4 and sub == 4:
            name = utf16_text(body)
            files.append(name)
            nodes.append(f"File({name})")
        else:
            nodes.append(_node_text(kind, sub, body))
    text = "/".join(nodes).replace("/,/", ",")
    file_path = "".join(_join_file_nodes(files)) if files else None
    return text, file_path


def _join_file_nodes(files: list[str]) -> list[str]:
    """Consecutive File nodes form one path (firmware may split a path into several nodes)."""
    parts: list[str] = []
    for name in files:
        if parts and not parts[-1].endswith("\\") and not name.startswith("\\"):
            parts.append("\\")
        parts.append(name)
    return parts


def _ipv4(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _u(body: bytes, fmt: str, default: tuple[int, ...]) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    return struct.unpack_from(fmt, body, 0) if len(body) >= size else default


def _node_text(kind: int, sub: int, body: bytes) -> str:
    if kind == 1 and sub == 1:  # hardware: PCI
        function, device = _u(body, "<BB", (0, 0))
        return f"Pci(0x{device:x},0x{function:x})"
    if kind == 1 and sub == 4 and len(body) >= 16:  # hardware: vendor
        return f"VenHw({guid_from(body[:16])})"
    if kind == 2 and sub == 1:  # ACPI
        hid, uid = _u(body, "<II", (0, 0))
        if hid & 0xFFFF == 0x41D0 and hid >> 16 in (0x0A03, 0x0A08):
            return f"PciRoot(0x{uid:x})"
        return f"Acpi(0x{hid:08x},0x{uid:x})"
    if kind == 3:  # messaging
        if sub == 2:
            pun, lun = _u(body, "<HH", (0, 0))
            return f"SCSI({pun},{lun})"
        if sub == 5:
            port, interface = _u(body, "<BB", (0, 0))
            return f"USB({port},{interface})"
        if sub == 11 and len(body) >= 33:
            if_type = body[32]
            size = 6 if if_type in (0, 1) else 32
            return f"MAC({body[:size].hex()},{if_type})"
        if sub == 12 and len(body) >= 15:
            local, remote = _ipv4(body[0:4]), _ipv4(body[4:8])
            protocol, static = struct.unpack_from("<H?", body, 12)
            return f"IPv4({remote},{protocol},{'Static' if static else 'DHCP'},{local})"
        if sub == 18:
            hba, multiplier, lun = _u(body, "<HHH", (0, 0, 0))
            return f"Sata({hba},{multiplier},{lun})"
        if sub == 23:
            namespace = _u(body, "<I", (0,))[0]
            return f"NVMe(0x{namespace:x})"
        if sub == 24:
            return f"Uri({body.decode('ascii', errors='replace')})"
    if kind == 4:  # media
        if sub == 1 and len(body) >= 38:
            number, start, size = struct.unpack_from("<IQQ", body, 0)
            signature, sig_type = body[20:36], body[37]
            if sig_type == 2:
                return f"HD({number},GPT,{guid_from(signature)},0x{start:x},0x{size:x})"
            sig = int.from_bytes(signature[:4], "little")
            return f"HD({number},MBR,0x{sig:x},0x{start:x},0x{size:x})"
        if sub == 3 and len(body) >= 16:
            return f"VenMedia({guid_from(body[:16])})"
        if sub == 6 and len(body) >= 16:
            return f"FvFile({guid_from(body[:16])})"
        if sub == 7 and len(body) >= 16:
            return f"FvVol({guid_from(body[:16])})"
        if sub == 8:
            start, end = _u(body, "<4xQQ", (0, 0))
            return f"Offset(0x{start:x},0x{end:x})"
    if kind == 5 and sub == 1:  # BIOS boot specification
        device_type = _u(body, "<H", (0,))[0]
        description = body[4:].split(b"\0")[0].decode("ascii", errors="replace")
        return f"BBS({device_type},{description})"
    return f"Path({kind},{sub},{body.hex()})"


# --- EFI_LOAD_OPTION (Boot####) and firmware blobs ---------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadOption:
    """EFI_LOAD_OPTION: the value of a Boot#### variable."""

    attributes: int
    description: str
    device_path: str
    file_path: str | None


def decode_load_option(raw: bytes) -> LoadOption:
    if len(raw) < 6:
        raise ValueError(f"EFI_LOAD_OPTION of {len(raw)} bytes is shorter than 6")
    attributes, path_len = struct.unpack_from("<IH", raw, 0)
    off = 6
    end = off
    while end + 1 < len(raw) and raw[end : end + 2] != b"\0\0":
        end += 2
    description = utf16_text(raw[off:end])
    off = end + 2
    if path_len > len(raw) - off:
        raise ValueError(f"load option device path of {path_len} bytes runs past the data")
    text, file_path = device_path_text(raw[off : off + path_len])
    return LoadOption(attributes, description, text, file_path)


def decode_blob(raw: bytes, *, described: bool) -> tuple[str, int, int]:
    """UEFI_PLATFORM_FIRMWARE_BLOB (16 bytes: base, length) or, ``described``,
    UEFI_PLATFORM_FIRMWARE_BLOB2 (description first): (description, base, length)."""
    if not described:
        if len(raw) < _BLOB.size:
            raise ValueError(f"firmware blob event of {len(raw)} bytes is shorter than 16")
        base, length = _BLOB.unpack_from(raw, 0)
        return "", base, length
    if not raw or len(raw) < 1 + raw[0] + _BLOB.size:
        raise ValueError(f"firmware blob event of {len(raw)} bytes is malformed")
    size = raw[0]
    description = raw[1 : 1 + size].decode("ascii", errors="replace").rstrip("\0")
    base, length = _BLOB.unpack_from(raw, 1 + size)
    return description, base, length
