"""Boots written with EventLogWriter, the way the lab's firmware simulation writes them."""

from __future__ import annotations

import hashlib
import struct
import uuid

from hostseal.measure import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SEPARATOR_DATA,
    EventLogWriter,
    EventType,
    efi_variable_data,
    image_load_event,
)

EFI_CERT_SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")
OWNER = uuid.UUID("5ec0a1b0-5ea1-4c0d-9a1b-00000000cafe")


def signature_list(hashes: list[bytes]) -> bytes:
    """An EFI_SIGNATURE_LIST of EFI_CERT_SHA256 entries."""
    size = 16 + 32
    body = b"".join(OWNER.bytes_le + h for h in hashes)
    return EFI_CERT_SHA256.bytes_le + struct.pack("<III", 28 + len(body), 0, size) + body


def image_digests(banks: tuple[str, ...], name: bytes) -> dict[str, bytes]:
    return {b: hashlib.new(b, b"image:" + name).digest() for b in banks}


def boot_log(
    *,
    secure_boot: bool = True,
    shim: bytes = b"shim-15.8",
    cmdline: str = "BOOT_IMAGE=/vmlinuz ro quiet",
    db: list[bytes] | None = None,
    firmware: str = "lab firmware 1.0",
    banks: tuple[str, ...] = ("sha1", "sha256"),
    locality: int | None = None,
    hcrtm: bytes | None = None,
) -> tuple[bytes, list[tuple[int, dict[str, bytes]]]]:
    """A typical UEFI + shim + GRUB boot; returns the log and every (PCR, digests) extended.

    ``hcrtm``: the code an H-CRTM sent the TPM (_TPM_Hash_Data), logged as EV_EFI_HCRTM_EVENT
    ("HCRTM", digest H(code)) before anything else extends PCR 0."""
    w = EventLogWriter(banks=banks)
    extends: list[tuple[int, dict[str, bytes]]] = []

    def add(pcr: int, event_type: int, data: bytes, **kw: object) -> None:
        extends.append((pcr, w.add(pcr, event_type, data, **kw)))  # type: ignore[arg-type]

    if locality is not None:
        w.add_startup_locality(locality)
    if hcrtm is not None:
        add(0, EventType.EV_EFI_HCRTM_EVENT, b"HCRTM", digest_data=hcrtm)
    add(0, EventType.EV_S_CRTM_VERSION, firmware.encode("utf-16-le") + b"\0\0")
    add(0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB, struct.pack("<QQ", 0xFFC00000, 0x400000))
    add(
        7,
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", bytes([secure_boot])),
    )
    for name, guid, hashes in (
        ("PK", EFI_GLOBAL_VARIABLE, [b"\x01" * 32]),
        ("KEK", EFI_GLOBAL_VARIABLE, [b"\x02" * 32]),
        ("db", EFI_IMAGE_SECURITY_DATABASE, db if db is not None else [b"\x03" * 32]),
        ("dbx", EFI_IMAGE_SECURITY_DATABASE, []),
    ):
        add(
            7,
            EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
            efi_variable_data(guid, name, signature_list(hashes)),
        )
    add(
        1,
        EventType.EV_EFI_VARIABLE_BOOT,
        efi_variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", b"\x01\x00"),
    )
    add(4, EventType.EV_EFI_ACTION, b"Calling EFI Application from Boot Option")
    for pcr in range(8):
        add(pcr, EventType.EV_SEPARATOR, SEPARATOR_DATA)
    for path, name in ((r"\EFI\ubuntu\shimx64.efi", shim), (r"\EFI\ubuntu\grubx64.efi", b"grub")):
        add(
            4,
            EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load_event(path, 955072),
            digests=image_digests(banks, name),
        )
    raw_cmdline = cmdline.encode()
    add(8, EventType.EV_IPL, b"grub_cmd: linux /vmlinuz " + raw_cmdline + b"\0")
    add(8, EventType.EV_IPL, b"kernel_cmdline: " + raw_cmdline + b"\0", digest_data=raw_cmdline)
    add(9, EventType.EV_IPL, b"/vmlinuz\0", digests=image_digests(banks, b"kernel"))
    add(5, EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation")
    add(5, EventType.EV_EFI_ACTION, b"Exit Boot Services Returned with Success")
    return w.to_bytes(), extends


def extend_all(
    extends: list[tuple[int, dict[str, bytes]]], banks: tuple[str, ...], locality: int | None = None
) -> dict[str, dict[int, bytes]]:
    """What a TPM would hold after extending these digests."""
    pcrs: dict[str, dict[int, bytes]] = {b: {} for b in banks}
    for bank in banks:
        size = hashlib.new(bank).digest_size
        if locality is not None:
            pcrs[bank][0] = bytes(size - 1) + bytes([locality])
        for pcr, digests in extends:
            current = pcrs[bank].get(pcr, bytes(size))
            pcrs[bank][pcr] = hashlib.new(bank, current + digests[bank]).digest()
    return pcrs
