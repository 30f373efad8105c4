"""Whether an event's data is covered by its measurement: verified, unverified or forged.

Replay proves the digests (they extend to the quoted PCRs); nothing proves an event's *data*
(a command line, a path, a variable's value) except recomputing its digest from that data. This
module knows, per event type, what real firmware and boot loaders hash, and checks the data
against the digest in **every** bank the event carries that hostseal can compute (an attacker
can rewrite the digests of a bank the quote does not cover, never those of the quoted one):

``verified``
    one known rule (below) gives every checked digest from the data. ``partial`` names what
    that rule leaves out (e.g. a variable's name when the firmware hashed its value only).
``forged``
    the event type must be hashed over its data, and no rule matches every bank: the data was
    altered after the boot (or the firmware is broken). A verdict that sees this fails.
``unverified``
    the format does not hash the data (an image load's digest is the image's Authenticode hash,
    a firmware blob's is the blob's), or no bank can be computed: the data may be shown to a
    person, marked unverified, and never decides anything.

Rules, each taken from real logs (the external corpus; /work/shared/docs/REALBOOT.md):

=================================  ==========================================================
EV_SEPARATOR, EV_EFI_ACTION,       H(data)
EV_ACTION, EV_EFI_GPT_EVENT(2),
EV_OMIT_BOOT_DEVICE_EVENTS
EV_EFI_VARIABLE_DRIVER_CONFIG,     H(UEFI_VARIABLE_DATA); Boot variables also H(value) (EDK2
EV_EFI_VARIABLE_BOOT(2)            and most firmware: the name is then not covered); legacy
                                   SHA-1-only logs also H(value) (TPM 1.2-era firmware)
EV_IPL on PCR 8/12: GRUB           "grub_cmd: X" / "kernel_cmdline: X" / "module_cmdline: X":
                                   H(X) without the NUL (upstream/Debian GRUB), or with it;
                                   "grub_cmd X" / "grub_kernel_cmdline X" (RHEL 8): H(X\\0)
                                   or H(X)
EV_IPL on PCR 8/12: UTF-16         H(data) (systemd-boot/-stub); a log record one byte short
                                   of its NUL (systemd-boot on the Arch workstation): H(data+0)
EV_EVENT_TAG load options (PCR12)  H(tagged body) (systemd-stub)
anything else                      H(data) if it matches, else unverified (S-CRTM version:
                                   a real server's firmware hashes something else)
=================================  ==========================================================

The result is cached on the event (it depends on the event's data and digests only), so an
appraisal hashes each event's data at most once, and only for the events it asks about.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from hostseal.measure.errors import EventLogError
from hostseal.measure.events import HASH_FUNCTIONS, Event, EventType

__all__ = [
    "FORGED",
    "UNVERIFIED",
    "VERIFIED",
    "Binding",
    "EventDataForged",
    "binding",
    "forged_events",
    "forged_message",
    "require_bound",
]

Status = Literal["verified", "unverified", "forged"]
VERIFIED: Status = "verified"
UNVERIFIED: Status = "unverified"
FORGED: Status = "forged"

FORGED_REMEDY = (
    "The event log was altered after the boot, so nothing it records can be trusted: "
    "investigate the host, then reboot it to record a new log. If a host's genuine log keeps "
    "failing this way, its firmware logs this event wrongly: report it with the log attached."
)

_GRUB_PREFIXES = (b"grub_cmd: ", b"kernel_cmdline: ", b"module_cmdline: ")
_RHEL_GRUB_PREFIXES = (b"grub_cmd ", b"grub_kernel_cmdline ")
_LOAD_OPTIONS_TAG = 0x8F3B22ED
_HASH_OVER_DATA = frozenset(
    {
        EventType.EV_SEPARATOR,
        EventType.EV_EFI_ACTION,
        EventType.EV_ACTION,
        EventType.EV_EFI_GPT_EVENT,
        EventType.EV_EFI_GPT_EVENT2,
        EventType.EV_OMIT_BOOT_DEVICE_EVENTS,
    }
)
_VARIABLES = frozenset(
    {
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType.EV_EFI_VARIABLE_BOOT,
        EventType.EV_EFI_VARIABLE_BOOT2,
    }
)
_BOOT_VARIABLES = frozenset({EventType.EV_EFI_VARIABLE_BOOT, EventType.EV_EFI_VARIABLE_BOOT2})
_VARIABLE_HEADER = struct.Struct("<16sQQ")


@dataclass(frozen=True, slots=True)
class Binding:
    """What an event's digests say about its data: ``status``, the rule that matched (or why
    none could), the banks checked, and what a matching rule leaves uncovered (``partial``)."""

    status: Status
    rule: str
    banks: tuple[str, ...] = ()
    partial: str = ""

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED

    @property
    def fully_verified(self) -> bool:
        return self.status == VERIFIED and not self.partial

    @property
    def forged(self) -> bool:
        return self.status == FORGED

    def label(self) -> str:
        """What a person reads next to the data: "", "unverified", "name unverified", ..."""
        if self.status == FORGED:
            return "FORGED: the event data does not match its measurement"
        if self.status == UNVERIFIED:
            return "unverified"
        return f"{self.partial} unverified" if self.partial else ""


class EventDataForged(EventLogError):
    """An event's data does not match its measured digest: the log was altered."""

    def __init__(self, event: Event, what: str = "") -> None:
        about = f", {what}" if what else ""
        super().__init__(
            f"The event data of PCR {event.pcr} event {event.index} ({event.type_name}{about}) "
            "does not match its measurement.",
            FORGED_REMEDY,
            event_index=event.index,
            offset=event.offset,
        )
        self.pcr = event.pcr
        self.event_type = event.type_name


def forged_message(event: Event, what: str = "") -> str:
    """The verdict message for an event whose data does not match its measurement."""
    about = f", {what}" if what else ""
    return (
        f"The event data of PCR {event.pcr} event {event.index} ({event.type_name}{about}) does "
        "not match its measurement: the event log was altered. Investigate the host and reboot "
        "it to record a new log"
    )


def _variable_value(data: bytes) -> bytes | None:
    if len(data) < _VARIABLE_HEADER.size:
        return None
    _guid, name_chars, value_size = _VARIABLE_HEADER.unpack_from(data, 0)
    start = _VARIABLE_HEADER.size + 2 * name_chars
    if name_chars > len(data) or start + value_size != len(data):
        return None
    return data[start:]


_RULE_DATA = "H(data)"
_GRUB_RULES = {
    prefix: (
        f"GRUB: H(text after '{prefix.decode().rstrip(': ')}: ')",
        f"GRUB: H(text after '{prefix.decode().rstrip(': ')}: ' with its NUL)",
    )
    for prefix in _GRUB_PREFIXES
}
_RHEL_GRUB_RULES = {
    prefix: (
        f"GRUB (RHEL): H(text after '{prefix.decode().rstrip()} ')",
        f"GRUB (RHEL): H(text after '{prefix.decode().rstrip()} ' without NUL)",
    )
    for prefix in _RHEL_GRUB_PREFIXES
}
_ALL_GRUB_PREFIXES = _GRUB_PREFIXES + _RHEL_GRUB_PREFIXES
_RULE_UTF16 = "systemd: H(UTF-16 text)"
_RULE_UTF16_SHORT = "systemd-boot: H(UTF-16 text), log record one byte short"
_RULE_VARIABLE = "H(UEFI_VARIABLE_DATA)"
_RULE_VALUE = "H(variable value), as firmware measures it"
_RULE_TAGGED = "H(tagged event data)"
_Rule = tuple[str, bytes, str]


def _ipl_rules(data: bytes) -> list[_Rule] | None:
    """The rules of a GRUB or systemd text event on PCR 8/12, None if it is neither."""
    if data.startswith(_ALL_GRUB_PREFIXES):
        for prefix, (stripped, whole) in _GRUB_RULES.items():
            if data.startswith(prefix):
                body = data[len(prefix) :]
                return [  # upstream GRUB's rule first: one hash per bank in the usual case
                    (stripped, body.rstrip(b"\0"), ""),
                    (whole, body, ""),
                    (_RULE_DATA, data, ""),
                ]
        for prefix, (whole, stripped) in _RHEL_GRUB_RULES.items():
            if data.startswith(prefix):
                body = data[len(prefix) :]
                return [
                    (_RULE_DATA, data, ""),
                    (whole, body, ""),
                    (stripped, body.rstrip(b"\0"), ""),
                ]
    if len(data) >= 2 and data[1] == 0 and data[0] != 0:
        rules = [(_RULE_UTF16, data, "")]
        if len(data) % 2:
            rules.append((_RULE_UTF16_SHORT, data + b"\0", ""))
        return rules
    return None


def _rules(event: Event) -> tuple[bool, list[_Rule]]:
    """(whether the type must hash its data, the (name, preimage, uncovered) rules to try)."""
    etype, data = event.event_type, event.data
    if etype in _HASH_OVER_DATA:
        return True, [(_RULE_DATA, data, "")]
    if etype in _VARIABLES:
        rules = [(_RULE_VARIABLE, data, "")]
        if etype in _BOOT_VARIABLES or (len(event.digests) == 1 and "sha1" in event.digests):
            value = _variable_value(data)
            if value is not None:
                rules.append((_RULE_VALUE, value, "name"))
        return True, rules
    if etype == EventType.EV_IPL and event.pcr in (8, 12):
        ipl = _ipl_rules(data)
        if ipl is not None:
            return True, ipl
    if etype == EventType.EV_EVENT_TAG and len(data) >= 8:
        tag, size = struct.unpack_from("<II", data, 0)
        rules = [(_RULE_TAGGED, data[8 : 8 + size], ""), (_RULE_DATA, data, "")]
        return tag == _LOAD_OPTIONS_TAG and event.pcr == 12, rules
    return False, [(_RULE_DATA, data, "")]


def binding(event: Event) -> Binding:
    """How ``event``'s data is bound to its digests (see the module documentation)."""
    cached = event.binding_cache
    if cached is not None and cached[0] is event.data and cached[1] is event.digests:
        result: Binding = cached[2]
        return result
    result = _bind(event)
    event.binding_cache = (event.data, event.digests, result)
    return result


_RESULTS: dict[tuple[Status, str, tuple[str, ...], str], Binding] = {}
_NOT_MEASURED = Binding(UNVERIFIED, "EV_NO_ACTION: not measured")
_NO_BANK = Binding(UNVERIFIED, "no digest of a bank hostseal can compute")


def _result(status: Status, rule: str, banks: tuple[str, ...], partial: str = "") -> Binding:
    """Bindings are few (rules x bank sets): share them rather than build one per event."""
    key = (status, rule, banks, partial)
    found = _RESULTS.get(key)
    if found is None:
        found = _RESULTS.setdefault(key, Binding(status, rule, banks, partial))
    return found


def _bind(event: Event) -> Binding:
    if event.event_type == EventType.EV_NO_ACTION:
        return _NOT_MEASURED
    digests = event.digests
    banks = tuple(digests)
    if all(bank in HASH_FUNCTIONS for bank in banks):
        checked = [(HASH_FUNCTIONS[bank], digest) for bank, digest in digests.items()]
    else:  # a bank hostseal cannot compute (SM3 without OpenSSL support, an unknown one)
        banks = tuple(bank for bank in banks if bank in HASH_FUNCTIONS)
        checked = [(HASH_FUNCTIONS[bank], digests[bank]) for bank in banks]
        if not checked:
            return _NO_BANK
    bound, rules = _rules(event)
    for name, preimage, partial in rules:
        for function, digest in checked:
            if function(preimage) != digest:
                break
        else:
            return _result(VERIFIED, name, banks, partial)
    if bound:
        return _result(FORGED, "no rule gives the measured digest in every bank", banks)
    return _result(UNVERIFIED, "the digest is not over the event data", banks)


_CAN_BE_FORGED = _HASH_OVER_DATA | _VARIABLES


def _can_be_forged(event: Event) -> bool:
    """Whether the type hashes its data (cheap: decides which events :func:`forged_events`
    hashes at all; an image load or a firmware blob can only be unverified)."""
    etype = event.event_type
    return (
        etype in _CAN_BE_FORGED
        or (etype == EventType.EV_IPL and event.pcr in (8, 12))
        or (etype == EventType.EV_EVENT_TAG and event.pcr == 12)
    )


def forged_events(events: Iterable[Event]) -> list[Event]:
    """The events whose data must be covered by their digests and is not. Hashes only the
    events whose type could be forged, each once (cached)."""
    return [e for e in events if _can_be_forged(e) and binding(e).status == FORGED]


def require_bound(event: Event, what: str = "") -> Binding:
    """The binding of an event whose data is about to be relied on; raises
    :class:`EventDataForged` when it is forged. Callers decide what an unverified one means."""
    result = binding(event)
    if result.forged:
        raise EventDataForged(event, what)
    return result
