"""Pure TCG PC Client event-log handling: parse, replay, decode, compare, diff, summarize, write.

Bytes in, values out: nothing here reads files, opens sockets or talks to a TPM, so everything
is fast to test and safe to fuzz. Every malformed input raises :class:`EventLogError`.

>>> log = parse_event_log(raw)                      # doctest: +SKIP
>>> replay(log)["sha256"][7].hex()                  # doctest: +SKIP
>>> secure_boot_state(log), kernel_cmdline(log)      # doctest: +SKIP
>>> diff_logs(sealed_log, log)                      # doctest: +SKIP
"""

from hostseal.measure.binding import (
    Binding,
    EventDataForged,
    binding,
    forged_events,
    forged_message,
)
from hostseal.measure.decode import (
    ERROR_SEPARATOR_DATA,
    SEPARATOR_DATA,
    Authority,
    BootApplication,
    Cmdline,
    FirmwareBlob,
    SecureBootDatabase,
    Separator,
    authorities,
    boot_applications,
    cmdline_of,
    data_verified,
    efi_actions,
    firmware_blobs,
    kernel_cmdline,
    kernel_cmdlines,
    scrtm_version,
    secure_boot_databases,
    secure_boot_event,
    secure_boot_state,
    separators,
)
from hostseal.measure.describe import describe
from hostseal.measure.diff import LogChange, diff_logs
from hostseal.measure.efi import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    EfiVariable,
    ImageLoad,
    SignatureEntry,
    decode_image_load,
    decode_signature_lists,
    decode_variable,
    efi_variable_data,
    image_load_event,
)
from hostseal.measure.errors import EventLogError, EventLogReplayMismatch
from hostseal.measure.events import (
    Algorithm,
    Event,
    EventLog,
    EventType,
    SpecIdEvent,
    event_type_name,
)
from hostseal.measure.parse import parse_event_log
from hostseal.measure.replay import (
    PcrMismatch,
    compare_pcrs,
    logged_banks,
    replay,
    replayable_banks,
    verify_pcrs,
)
from hostseal.measure.summary import summarize
from hostseal.measure.writer import EventLogWriter

__all__ = [
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "ERROR_SEPARATOR_DATA",
    "SEPARATOR_DATA",
    "Algorithm",
    "Authority",
    "Binding",
    "BootApplication",
    "Cmdline",
    "EfiVariable",
    "Event",
    "EventDataForged",
    "EventLog",
    "EventLogError",
    "EventLogReplayMismatch",
    "EventLogWriter",
    "EventType",
    "FirmwareBlob",
    "ImageLoad",
    "LogChange",
    "PcrMismatch",
    "SecureBootDatabase",
    "Separator",
    "SignatureEntry",
    "SpecIdEvent",
    "authorities",
    "binding",
    "boot_applications",
    "cmdline_of",
    "compare_pcrs",
    "data_verified",
    "decode_image_load",
    "decode_signature_lists",
    "decode_variable",
    "describe",
    "diff_logs",
    "efi_actions",
    "efi_variable_data",
    "event_type_name",
    "firmware_blobs",
    "forged_events",
    "forged_message",
    "image_load_event",
    "kernel_cmdline",
    "kernel_cmdlines",
    "logged_banks",
    "parse_event_log",
    "replay",
    "replayable_banks",
    "scrtm_version",
    "secure_boot_databases",
    "secure_boot_event",
    "secure_boot_state",
    "separators",
    "summarize",
    "verify_pcrs",
]
