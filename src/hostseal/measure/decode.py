"""What an operator needs from a log: Secure Boot state and databases, boot applications,
kernel command line, firmware blobs, S-CRTM version, separators, authorities.

Event data is not covered by replay: only the digests are extended. Where a value is read from
the data of an event whose digest must be over that data (Secure Boot variables, kernel command
lines, S-CRTM version, separators), the data is checked against the digest in every bank
(:mod:`hostseal.measure.binding`) and a mismatch is an error (:class:`EventDataForged` for data
that does not match its measurement), as in go-attestation and go-tpm-tools. Values whose digest
is not over the data (a boot application's path, a firmware blob's description) carry their
:class:`~hostseal.measure.binding.Binding`: show them as unverified, never decide on them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from hostseal.measure import efi
from hostseal.measure.binding import Binding, binding, require_bound
from hostseal.measure.errors import EventLogError
from hostseal.measure.events import (
    HASH_FUNCTIONS,
    Event,
    EventLog,
    EventType,
)

_ALTERED_REMEDY = (
    "The event's data was altered or the firmware logs it wrongly, so the value cannot be "
    "trusted. Compare the log with the TPM's PCRs, and update the firmware if this persists."
)
SEPARATOR_DATA = b"\0\0\0\0"
ERROR_SEPARATOR_DATA = b"\x01\0\0\0"
LEGACY_SEPARATOR_DATA = b"\xff\xff\xff\xff"
LOAD_OPTIONS_TAG = 0x8F3B22ED  # systemd-stub: kernel command line (EV_EVENT_TAG on PCR 12)
INITRD_TAG = 0x8F3B22EC
SECURE_BOOT_DATABASES = {
    "PK": efi.EFI_GLOBAL_VARIABLE,
    "KEK": efi.EFI_GLOBAL_VARIABLE,
    "db": efi.EFI_IMAGE_SECURITY_DATABASE,
    "dbx": efi.EFI_IMAGE_SECURITY_DATABASE,
}


def data_verified(event: Event) -> bool | None:
    """Whether every digest hostseal can compute equals ``H(data)``; None if none can be."""
    result: bool | None = None
    for bank, digest in event.digests.items():
        function = HASH_FUNCTIONS.get(bank)
        if function is None:
            continue
        if function(event.data) != digest:
            return False
        result = True
    return result


def _require_verified(event: Event, what: str) -> None:
    if data_verified(event) is False:
        raise EventLogError.at(
            event.index,
            event.offset,
            f"the {what} event's data does not match its digest",
            _ALTERED_REMEDY,
        )


def _require_variable_verified(log: EventLog, event: Event, variable: efi.EfiVariable) -> None:
    """A variable's digest is H(UEFI_VARIABLE_DATA); TPM 1.2-era firmware (legacy SHA-1 logs,
    e.g. go-eventlog's linux_tpm12) hashed the variable's value alone, which is accepted there
    (:mod:`hostseal.measure.binding` then marks the name as not covered). Raises
    :class:`EventDataForged` when no rule gives the digest in every bank."""
    del log  # the binding knows the legacy rule from the event's digests
    require_bound(event, f"{variable.name} variable")


def _variable(event: Event) -> efi.EfiVariable:
    try:
        return efi.decode_variable(event.data)
    except ValueError as err:
        raise EventLogError.at(event.index, event.offset, str(err)) from None


def _before_separator(log: EventLog, pcr: int) -> list[Event]:
    """The events extended into ``pcr`` before its (first) separator."""
    events: list[Event] = []
    for event in log.events:
        if event.pcr != pcr or not event.extended:
            continue
        if event.event_type == EventType.EV_SEPARATOR:
            break
        events.append(event)
    return events


# --- Secure Boot ---------------------------------------------------------------------------


def secure_boot_event(log: EventLog) -> tuple[Event, efi.EfiVariable] | None:
    """The SecureBoot variable's event in PCR 7 (before the separator) and its decoded data,
    unchecked; None if the log has none. Raises :class:`EventLogError` if it is logged twice."""
    found: tuple[Event, efi.EfiVariable] | None = None
    for event in _before_separator(log, 7):
        if event.event_type != EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
            continue
        variable = _variable(event)
        if variable.guid != efi.EFI_GLOBAL_VARIABLE or variable.name != "SecureBoot":
            continue
        if found is not None:
            raise EventLogError.at(
                event.index, event.offset, "the SecureBoot variable is measured a second time"
            )
        found = (event, variable)
    return found


def secure_boot_state(log: EventLog, *, allow_empty: bool = False) -> bool | None:
    """Secure Boot on (True) or off (False) per the SecureBoot variable measured into PCR 7;
    None when the log has no such measurement (legacy BIOS, or a log without PCR 7).

    Raises :class:`EventLogError` when the measurement cannot be trusted or read: its data does
    not match its digest, the variable is logged twice, or its value is not exactly one byte
    (go-tpm-tools rejects the Arch Linux workstation log for the same reason: "SecureBoot data
    len is 0, expected 1"). ``allow_empty`` reads an empty value as off, as go-eventlog's
    ``AllowEmptySBVar`` does (firmware that measures an absent SecureBoot variable).
    """
    found = secure_boot_event(log)
    if found is None:
        return None
    event, variable = found
    _require_variable_verified(log, event, variable)
    if not variable.data and allow_empty:
        return False
    if len(variable.data) != 1:
        raise EventLogError.at(
            event.index,
            event.offset,
            f"the SecureBoot variable is logged with {len(variable.data)} bytes of data, "
            "expected 1, so the Secure Boot state cannot be read from this log",
            "The firmware measured the SecureBoot variable without its value. Check Secure Boot "
            "in the firmware setup; hostseal cannot tell from this log whether it is on.",
        )
    return variable.data != b"\0"


@dataclass(frozen=True, slots=True)
class SecureBootDatabase:
    """A Secure Boot key database (PK, KEK, db, dbx) as measured into PCR 7."""

    name: str
    event: Event
    entries: tuple[efi.SignatureEntry, ...]

    @property
    def certificates(self) -> int:
        return sum(1 for e in self.entries if e.type in efi.CERTIFICATE_TYPES)

    @property
    def hashes(self) -> int:
        return len(self.entries) - self.certificates

    @property
    def present(self) -> bool:
        return bool(self.entries)

    def describe(self) -> str:
        if not self.entries:
            return f"{self.name}: empty"
        certificates = count_text(self.certificates, "certificate")
        return f"{self.name}: {certificates}, {count_text(self.hashes, 'hash')}"


def count_text(n: int, noun: str) -> str:
    """ "1 certificate", "2 certificates", "0 hashes"."""
    plural = noun + ("es" if noun.endswith("h") else "s")
    return f"{n} {noun if n == 1 else plural}"


def secure_boot_databases(log: EventLog) -> dict[str, SecureBootDatabase]:
    """PK, KEK, db and dbx as measured before the PCR 7 separator (absent ones are left out)."""
    databases: dict[str, SecureBootDatabase] = {}
    for event in _before_separator(log, 7):
        if event.event_type != EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
            continue
        variable = _variable(event)
        if SECURE_BOOT_DATABASES.get(variable.name) != variable.guid:
            continue
        _require_variable_verified(log, event, variable)
        try:
            entries = efi.decode_signature_lists(variable.data)
        except ValueError as err:
            raise EventLogError.at(event.index, event.offset, f"{variable.name}: {err}") from None
        databases[variable.name] = SecureBootDatabase(variable.name, event, tuple(entries))
    return databases


@dataclass(frozen=True, slots=True)
class Authority:
    """An EV_EFI_VARIABLE_AUTHORITY event: what authorised loading a component."""

    event: Event
    name: str
    owner: uuid.UUID | None
    after_separator: bool

    @property
    def binding(self) -> Binding:
        return binding(self.event)


def authorities(log: EventLog) -> list[Authority]:
    """EV_EFI_VARIABLE_AUTHORITY events on PCR 7 (``after_separator``: for a boot application,
    rather than for firmware drivers)."""
    result: list[Authority] = []
    separated = False
    for event in log.events:
        if event.pcr != 7 or not event.extended:
            continue
        if event.event_type == EventType.EV_SEPARATOR:
            separated = True
        elif event.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY:
            variable = _variable(event)
            owner = efi.guid_from(variable.data[:16]) if len(variable.data) >= 16 else None
            result.append(Authority(event, variable.name, owner, separated))
    return result


# --- separators, firmware ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Separator:
    event: Event
    error: bool  # the firmware signalled an error (data 0x00000001)
    verified: bool | None  # digest == H(data)


def separators(log: EventLog) -> list[Separator]:
    return [
        Separator(e, e.data == ERROR_SEPARATOR_DATA, data_verified(e))
        for e in log.events
        if e.event_type == EventType.EV_SEPARATOR
    ]


def scrtm_version(log: EventLog) -> str | None:
    """The S-CRTM (firmware) version from EV_S_CRTM_VERSION on PCR 0, or None if not logged.

    Raises :class:`EventLogError` when the event's data does not match its digest (go-tpm-tools
    rejects the gdc-host log this way: "invalid SCRTM version event for PCR0").
    """
    version: str | None = None
    for event in _before_separator(log, 0):
        if event.event_type == EventType.EV_S_CRTM_VERSION:
            _require_verified(event, "S-CRTM version")
            version = version_text(event.data)
    return version


def version_text(data: bytes) -> str:
    """An S-CRTM version: UTF-16 text, an ASCII string, or a GUID (16 bytes)."""
    if len(data) >= 2 and len(data) % 2 == 0 and data[1:2] == b"\0":
        text = efi.utf16_text(data)
        if text.isprintable():
            return text
    text = data.rstrip(b"\0").decode("ascii", errors="replace")
    if text.isprintable() and text:
        return text
    if len(data) == 16:
        return str(efi.guid_from(data))
    return data.hex()


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    event: Event
    description: str
    base: int
    length: int

    @property
    def binding(self) -> Binding:
        """Unverified as a rule: the digest is over the blob, not over this description."""
        return binding(self.event)


def firmware_blobs(log: EventLog) -> list[FirmwareBlob]:
    """EV_EFI_PLATFORM_FIRMWARE_BLOB(2) events and EV_POST_CODE events that carry a blob."""
    blobs: list[FirmwareBlob] = []
    for event in log.events:
        described = event.event_type == EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2
        if event.event_type == EventType.EV_POST_CODE and len(event.data) != 16:
            continue
        if described or event.event_type in (
            EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
            EventType.EV_POST_CODE,
        ):
            try:
                description, base, length = efi.decode_blob(event.data, described=described)
            except ValueError as err:
                raise EventLogError.at(event.index, event.offset, str(err)) from None
            blobs.append(FirmwareBlob(event, description, base, length))
    return blobs


# --- boot chain ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BootApplication:
    """An EV_EFI_BOOT_SERVICES_APPLICATION: the file (if the device path names one) and digests.

    The digests are the image's Authenticode hash, proven by replay; the path and length come
    from the event data, which no digest covers: show them as unverified, never decide on them.
    """

    event: Event
    path: str | None
    device_path: str
    image_length: int

    @property
    def digests(self) -> dict[str, bytes]:
        return self.event.digests

    @property
    def name(self) -> str:
        return self.path or self.device_path or "(no device path)"

    @property
    def binding(self) -> Binding:
        return binding(self.event)


def boot_applications(log: EventLog) -> list[BootApplication]:
    """Boot applications in load order (firmware apps, shim, boot loader, kernel, ...).

    A malformed UEFI_IMAGE_LOAD_EVENT does not stop the list: its digest still counts, and the
    device path says ``<malformed: ...>``.
    """
    apps: list[BootApplication] = []
    for event in log.events:
        if event.event_type != EventType.EV_EFI_BOOT_SERVICES_APPLICATION:
            continue
        try:
            image = efi.decode_image_load(event.data)
        except ValueError as err:
            apps.append(BootApplication(event, None, f"<malformed: {err}>", 0))
            continue
        apps.append(BootApplication(event, image.file_path, image.device_path, image.length))
    return apps


def ipl_text(data: bytes) -> str:
    """The text of an EV_IPL event: ASCII (GRUB, shim) or UTF-16 (systemd-boot/-stub)."""
    if len(data) >= 2 and data[1:2] == b"\0" and data[0:1] != b"\0":
        return efi.utf16_text(data)
    end = data.find(b"\0")
    return (data if end < 0 else data[:end]).decode("utf-8", errors="replace")


def cmdline_of(event: Event) -> str | None:
    """The kernel command line an event records, or None if it records none.

    GRUB: EV_IPL on PCR 8 "kernel_cmdline: ..."; systemd-stub: EV_IPL on PCR 12 (UTF-16) or an
    EV_EVENT_TAG with the load-options tag; systemd-boot before v251: UTF-16 EV_IPL on PCR 8.
    """
    etype, pcr, data = event.event_type, event.pcr, event.data
    if etype == EventType.EV_IPL and pcr in (8, 12):
        if data.startswith(b"kernel_cmdline: "):
            return ipl_text(data[len(b"kernel_cmdline: ") :])
        if len(data) >= 2 and data[1:2] == b"\0":
            return ipl_text(data)
    elif (
        etype == EventType.EV_EVENT_TAG
        and pcr == 12
        and len(data) >= 8
        and int.from_bytes(data[:4], "little") == LOAD_OPTIONS_TAG
    ):
        return efi.utf16_text(data[8:])
    return None


@dataclass(frozen=True, slots=True)
class Cmdline:
    """A kernel command line as an event records it, with how its digest binds it."""

    event: Event
    text: str

    @property
    def binding(self) -> Binding:
        return binding(self.event)

    @property
    def verified(self) -> bool:
        return self.binding.verified


def kernel_cmdlines(log: EventLog) -> list[Cmdline]:
    """Every event that records a kernel command line (see :func:`cmdline_of`), unchecked."""
    return [Cmdline(e, text) for e in log.events if (text := cmdline_of(e)) is not None]


def kernel_cmdline(log: EventLog) -> str | None:
    """The kernel command line of the boot (see :func:`cmdline_of`), or None if the log does not
    record one or its digest does not cover it (unverified). The last one logged wins (the one
    the kernel was started with). Raises :class:`EventDataForged` when a command-line event's
    data does not match its measurement."""
    found = kernel_cmdlines(log)
    for cmdline in found:
        require_bound(cmdline.event, "kernel command line")
    if not found or not found[-1].verified:
        return None
    return found[-1].text


def efi_actions(log: EventLog) -> list[tuple[Event, str]]:
    """EV_EFI_ACTION and EV_ACTION events with their text, unchecked: the digest is H(text), so
    check ``binding(event)`` before relying on one (describe() marks forged ones)."""
    return [
        (e, e.data.decode("ascii", errors="replace").rstrip("\0"))
        for e in log.events
        if e.event_type in (EventType.EV_EFI_ACTION, EventType.EV_ACTION)
    ]
