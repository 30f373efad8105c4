"""A firmware simulation: what UEFI firmware, shim and GRUB measure at boot.

:func:`measure_boot` turns a :class:`BootConfig` into a crypto-agile TCG event log and the list
of PCR extends that produce exactly that log's PCR values, in the order the platform performs
them:

========  ==========================================================================
PCR 0     S-CRTM version, the platform firmware blob
PCR 1     BootOrder and the boot option (platform configuration)
PCR 7     SecureBoot, PK, KEK, db, dbx (Secure Boot policy); after the separator, the
          db entry that authorised the boot loader (only when Secure Boot is on)
PCR 4     "Calling EFI Application from Boot Option", then shim, GRUB and the kernel
PCR 0-7   separators
PCR 8     the kernel command line, as GRUB measures it ("kernel_cmdline: ...")
PCR 9     the kernel file, as GRUB measures it
PCR 5     Exit Boot Services
========  ==========================================================================

Images are simulated: a boot application's digest is the hash of ``"hostseal-lab image:" +
name``, so changing a name (``bootloader="grub-2.12-evil"``) changes its digest as a new binary
would.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

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
LAB_OWNER = uuid.UUID("5ec0a1b0-5ea1-4c0d-9a1b-00000000cafe")
_HASHES = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}

#: The PCR banks a lab TPM can have (the simulated firmware measures into each of them).
LAB_BANKS = tuple(_HASHES)

DEFAULT_CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-lab root=/dev/vda1 ro quiet"


@dataclass(frozen=True)
class BootConfig:
    """What a boot looks like; every field changes some measurement."""

    secure_boot: bool = True
    firmware: str = "hostseal-lab-firmware 1.0"
    shim: str = "shim-15.8"
    bootloader: str = "grub-2.12"
    kernel: str = "vmlinuz-6.1.0-lab"
    kernel_cmdline: str = DEFAULT_CMDLINE
    db: str = "lab-db-2024"
    dbx: str = "lab-dbx-2024"
    #: GRUB modules loaded (each measured into PCR 9, as GRUB does): a long event log.
    grub_modules: int = 0

    def with_changes(self, **changes: object) -> BootConfig:
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown boot settings: {', '.join(sorted(unknown))}")
        return BootConfig(**{**asdict(self), **given})

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> BootConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Extend:
    """One PCR extend the platform performs: the PCR and a digest per bank."""

    pcr: int
    digests: dict[str, bytes]


def _image_digests(name: str, banks: Iterable[str]) -> dict[str, bytes]:
    content = b"hostseal-lab image:" + name.encode()
    return {bank: _HASHES[bank](content).digest() for bank in banks}


def _signature_list(entries: Iterable[str]) -> bytes:
    """An EFI_SIGNATURE_LIST of EFI_CERT_SHA256 entries (owner GUID + 32-byte hash each)."""
    sigs = b"".join(LAB_OWNER.bytes_le + hashlib.sha256(e.encode()).digest() for e in entries)
    size = 16 + 32
    header = EFI_CERT_SHA256.bytes_le + struct.pack("<III", 28 + len(sigs), 0, size)
    return header + sigs


def _utf16(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def measure_boot(config: BootConfig, banks: tuple[str, ...]) -> tuple[bytes, list[Extend]]:
    """The event log of one boot and the PCR extends that match it."""
    log = EventLogWriter(banks=banks)
    extends: list[Extend] = []

    def add(pcr: int, event_type: EventType, data: bytes, **kw: object) -> None:
        digests = log.add(pcr=pcr, event_type=event_type, data=data, **kw)  # type: ignore[arg-type]
        extends.append(Extend(pcr, digests))

    # PCR 0: the firmware itself.
    add(0, EventType.EV_S_CRTM_VERSION, _utf16(config.firmware))
    add(
        0,
        EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        struct.pack("<QQ", 0xFF000000, 0x01000000),
        digests=_image_digests("firmware volume:" + config.firmware, banks),
    )
    # PCR 7: Secure Boot policy, measured before anything from outside the firmware runs.
    add(
        7,
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", bytes([int(config.secure_boot)])),
    )
    for name, entries in (
        ("PK", ["lab-platform-key"]),
        ("KEK", ["lab-kek"]),
        ("db", [config.db]),
        ("dbx", [config.dbx]),
    ):
        guid = EFI_GLOBAL_VARIABLE if name in ("PK", "KEK") else EFI_IMAGE_SECURITY_DATABASE
        add(
            7,
            EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
            efi_variable_data(guid, name, _signature_list(entries)),
        )
    # PCR 1: boot configuration.
    add(
        1,
        EventType.EV_EFI_VARIABLE_BOOT,
        efi_variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", struct.pack("<H", 1)),
    )
    # PCR 4: the boot manager calls the boot option.
    add(4, EventType.EV_EFI_ACTION, b"Calling EFI Application from Boot Option")
    for pcr in range(8):
        add(pcr, EventType.EV_SEPARATOR, SEPARATOR_DATA)
    # Secure Boot verified shim against db: the authority is measured once.
    if config.secure_boot:
        authority = LAB_OWNER.bytes_le + hashlib.sha256(config.db.encode()).digest()
        add(
            7,
            EventType.EV_EFI_VARIABLE_AUTHORITY,
            efi_variable_data(EFI_IMAGE_SECURITY_DATABASE, "db", authority),
        )
    for path, name, length in (
        ("\\EFI\\debian\\shimx64.efi", config.shim, 950_000),
        ("\\EFI\\debian\\grubx64.efi", config.bootloader, 2_500_000),
        ("\\vmlinuz", config.kernel, 8_000_000),
    ):
        add(
            4,
            EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load_event(path, image_length=length),
            digests=_image_digests(name, banks),
        )
    # GRUB: kernel command line (PCR 8) and kernel file (PCR 9).
    cmdline = config.kernel_cmdline.encode()
    add(8, EventType.EV_IPL, b"kernel_cmdline: " + cmdline + b"\0", digest_data=cmdline)
    add(
        9,
        EventType.EV_IPL,
        b"/boot/" + config.kernel.encode() + b"\0",
        digests=_image_digests(config.kernel, banks),
    )
    for number in range(config.grub_modules):
        module = f"/boot/grub/x86_64-efi/module{number:04d}.mod"
        add(9, EventType.EV_IPL, module.encode() + b"\0", digests=_image_digests(module, banks))
    # PCR 5: the OS takes over.
    add(5, EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation")
    add(5, EventType.EV_EFI_ACTION, b"Exit Boot Services Returned with Success")
    return log.to_bytes(), extends
