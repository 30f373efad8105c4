"""Reference policies: what a host must have booted to pass attestation.

A :class:`ReferencePolicy` names the expected PCR values (per bank), the boot applications
allowed (SHA-256 digests of EV_EFI_BOOT_SERVICES_APPLICATION events in PCR 4), whether Secure
Boot must be on, which kernel command lines are allowed (exact strings, and/or settings that
must be present), and which PCRs the host must quote. Policies come from a known-good host
(:func:`capture_policy`, "golden" values) or from hand-written JSON
(:meth:`ReferencePolicy.from_json`); both are versioned::

    {
      "format": "hostseal-reference-policy", "version": 1,
      "name": "rack-12-gen11",
      "pcrs": {"sha256": {"0": "3d45...", "7": "65ca..."}},
      "boot_applications": [{"sha256": "9f1a...", "path": "\\\\EFI\\\\debian\\\\shimx64.efi"}],
      "require_secure_boot": true,
      "kernel_cmdlines": ["BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"],
      "kernel_cmdline_required": ["lockdown=integrity"],
      "quote_bank": "sha256",
      "quote_pcrs": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    }

A policy that would accept every host is refused (:class:`PolicyInvalid`): one with no PCR
values, no boot-application allow-list, no Secure Boot requirement and no command-line rule; so
is one that checks PCRs it does not have the host quote (an unquoted PCR, or events in it,
prove nothing). Every :class:`ReferencePolicy` that exists has passed these checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hostseal.attest.errors import PolicyInvalid
from hostseal.measure import (
    ERROR_SEPARATOR_DATA,
    SEPARATOR_DATA,
    Event,
    EventLog,
    EventLogError,
    EventType,
    binding,
    boot_applications,
    forged_events,
    forged_message,
    kernel_cmdlines,
    secure_boot_event,
)
from hostseal.measure.decode import LEGACY_SEPARATOR_DATA
from hostseal.measure.events import ALGORITHMS_BY_NAME

__all__ = [
    "DEFAULT_PINNED_PCRS",
    "POLICY_FORMAT",
    "POLICY_VERSION",
    "AllowedApplication",
    "ReferencePolicy",
    "capture_policy",
    "loaded_code",
    "verified_secure_boot",
]

POLICY_FORMAT = "hostseal-reference-policy"
POLICY_VERSION = 1
PCR_COUNT = 24
#: PCRs a captured policy pins by value: firmware, option ROMs, Secure Boot policy. Boot
#: applications (PCR 4) and the command line (PCR 8/12) get rules that survive updates of
#: their own; PCR 1, 5 and 9 change with boot order, disks and GRUB files.
DEFAULT_PINNED_PCRS = (0, 2, 7)
#: PCRs a captured policy quotes (those the event log measures into).
BOOT_PCRS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14})
APPLICATION_PCR = 4
SECURE_BOOT_PCR = 7
CMDLINE_PCRS = (8, 12)

FIX_REMEDY = (
    "Correct the field named and load the policy again, or capture a policy from a "
    "known-good host instead of writing one by hand."
)
_FIELDS = (
    "format",
    "version",
    "name",
    "description",
    "pcrs",
    "boot_applications",
    "require_secure_boot",
    "kernel_cmdlines",
    "kernel_cmdline_required",
    "quote_bank",
    "quote_pcrs",
)


def _invalid(field_name: str, what: str) -> PolicyInvalid:
    return PolicyInvalid(
        f"Reference policy field '{field_name}': {what}.", FIX_REMEDY, field=field_name
    )


@dataclass(frozen=True)
class AllowedApplication:
    """A boot application the policy allows: its SHA-256 digest (as the event log records it,
    the Authenticode hash of the image) and, for people, the path it was seen at."""

    sha256: bytes
    path: str | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"sha256": self.sha256.hex()}
        if self.path is not None:
            data["path"] = self.path
        return data


@dataclass(frozen=True)
class ReferencePolicy:
    """A validated reference policy (see the module documentation).

    ``pcrs`` maps a bank to expected values per PCR; ``quote_pcrs`` are the PCRs of
    ``quote_bank`` the host must quote, which must cover every PCR the policy checks.
    """

    name: str
    pcrs: Mapping[str, Mapping[int, bytes]] = field(default_factory=dict)
    boot_applications: tuple[AllowedApplication, ...] = ()
    require_secure_boot: bool = False
    kernel_cmdlines: tuple[str, ...] = ()
    kernel_cmdline_required: tuple[str, ...] = ()
    quote_pcrs: tuple[int, ...] = ()
    quote_bank: str = "sha256"
    description: str = ""
    version: int = POLICY_VERSION

    def __post_init__(self) -> None:
        # Own copies, so that a caller's dict cannot change a validated policy.
        pcrs = {
            bank: {pcr: bytes(v) for pcr, v in values.items()} for bank, values in self.pcrs.items()
        }
        object.__setattr__(self, "pcrs", pcrs)
        object.__setattr__(self, "quote_pcrs", tuple(self.quote_pcrs))
        _validate(self)

    @property
    def has_cmdline_rule(self) -> bool:
        return bool(self.kernel_cmdlines or self.kernel_cmdline_required)

    @property
    def allowed_digests(self) -> frozenset[bytes]:
        return frozenset(app.sha256 for app in self.boot_applications)

    def to_dict(self) -> dict[str, object]:
        return {
            "format": POLICY_FORMAT,
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "pcrs": {
                bank: {str(pcr): value.hex() for pcr, value in sorted(values.items())}
                for bank, values in self.pcrs.items()
            },
            "boot_applications": [app.to_dict() for app in self.boot_applications],
            "require_secure_boot": self.require_secure_boot,
            "kernel_cmdlines": list(self.kernel_cmdlines),
            "kernel_cmdline_required": list(self.kernel_cmdline_required),
            "quote_bank": self.quote_bank,
            "quote_pcrs": list(self.quote_pcrs),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferencePolicy:
        """Parse and validate a policy; :class:`PolicyInvalid` names the field at fault."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise PolicyInvalid(
                f"The reference policy is not valid JSON: {err}.", FIX_REMEDY
            ) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> ReferencePolicy:
        if not isinstance(data, dict):
            raise PolicyInvalid("A reference policy is a JSON object.", FIX_REMEDY)
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise _invalid(unknown[0], f"unknown field (known: {', '.join(_FIELDS)})")
        fmt = data.get("format", POLICY_FORMAT)
        if fmt != POLICY_FORMAT:
            raise _invalid("format", f"expected {POLICY_FORMAT!r}, found {fmt!r}")
        if "version" not in data:
            raise _invalid("version", f"missing (this hostseal writes version {POLICY_VERSION})")
        version = data["version"]
        if type(version) is not int or version < 1:
            raise _invalid("version", f"must be a positive integer, found {version!r}")
        if version > POLICY_VERSION:
            raise PolicyInvalid(
                f"Reference policy version {version} is newer than this hostseal understands "
                f"(version {POLICY_VERSION}).",
                f"Upgrade hostseal on the server, or write the policy in version {POLICY_VERSION}.",
                field="version",
            )
        return cls(
            name=_string(data, "name", required=True),
            description=_string(data, "description"),
            pcrs=_pcrs(data.get("pcrs", {})),
            boot_applications=_applications(data.get("boot_applications", [])),
            require_secure_boot=_bool(data, "require_secure_boot"),
            kernel_cmdlines=_strings(data, "kernel_cmdlines"),
            kernel_cmdline_required=_strings(data, "kernel_cmdline_required"),
            quote_bank=_string(data, "quote_bank") or "sha256",
            quote_pcrs=_pcr_list(data.get("quote_pcrs", []), "quote_pcrs"),
            version=version,
        )


# --- JSON field readers ----------------------------------------------------------------------


def _string(data: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise _invalid(key, f"must be a string, found {type(value).__name__}")
    if required and not value.strip():
        raise _invalid(key, "missing or empty")
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise _invalid(key, f"must be true or false, found {value!r}")
    return value


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(key, "must be a list of strings")
    return tuple(value)


def _hex(value: object, where: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise _invalid(where, f"must be a hex string, found {type(value).__name__}")
    try:
        raw = bytes.fromhex(value.lower().removeprefix("0x"))
    except ValueError:
        raise _invalid(where, f"{value!r} is not hex") from None
    if len(raw) != size:
        raise _invalid(where, f"must be {size} bytes ({2 * size} hex digits), found {len(raw)}")
    return raw


def _pcr_index(value: object, where: str) -> int:
    number = value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    if type(number) is not int or not 0 <= number < PCR_COUNT:
        raise _invalid(where, f"{value!r} is not a PCR number (0-23)")
    return number


def _pcrs(value: object) -> dict[str, dict[int, bytes]]:
    if not isinstance(value, dict):
        raise _invalid("pcrs", 'must be an object: {"sha256": {"0": "<hex>", ...}}')
    banks: dict[str, dict[int, bytes]] = {}
    for bank, values in value.items():
        algorithm = ALGORITHMS_BY_NAME.get(bank)
        if algorithm is None:
            raise _invalid(
                f"pcrs.{bank}", f"unknown PCR bank (known: {', '.join(ALGORITHMS_BY_NAME)})"
            )
        if not isinstance(values, dict):
            raise _invalid(f"pcrs.{bank}", 'must be an object: {"0": "<hex>", ...}')
        banks[bank] = {
            _pcr_index(pcr, f"pcrs.{bank}.{pcr}"): _hex(
                digest, f"pcrs.{bank}.{pcr}", algorithm.size
            )
            for pcr, digest in values.items()
        }
    return banks


def _applications(value: object) -> tuple[AllowedApplication, ...]:
    if not isinstance(value, list):
        raise _invalid("boot_applications", "must be a list")
    apps = []
    for index, item in enumerate(value):
        where = f"boot_applications.{index}"
        if isinstance(item, str):
            apps.append(AllowedApplication(_hex(item, where, 32)))
            continue
        if not isinstance(item, dict) or set(item) - {"sha256", "path"} or "sha256" not in item:
            raise _invalid(where, 'must be "<sha256 hex>" or {"sha256": "<hex>", "path": "..."}')
        path = item.get("path")
        if path is not None and not isinstance(path, str):
            raise _invalid(f"{where}.path", "must be a string")
        apps.append(AllowedApplication(_hex(item["sha256"], f"{where}.sha256", 32), path))
    return tuple(apps)


def _pcr_list(value: object, key: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _invalid(key, "must be a list of PCR numbers")
    return tuple(_pcr_index(v, f"{key}.{i}") for i, v in enumerate(value))


# --- validation ------------------------------------------------------------------------------


def _validate(policy: ReferencePolicy) -> None:
    if not isinstance(policy.name, str) or not policy.name.strip():
        raise _invalid("name", "missing or empty")
    if policy.version != POLICY_VERSION:
        raise _invalid("version", f"this hostseal writes and reads version {POLICY_VERSION}")
    if policy.quote_bank not in ALGORITHMS_BY_NAME:
        raise _invalid("quote_bank", f"unknown PCR bank {policy.quote_bank!r}")
    if len(set(policy.quote_pcrs)) != len(policy.quote_pcrs):
        raise _invalid("quote_pcrs", "lists a PCR twice")
    for pcr in policy.quote_pcrs:
        _pcr_index(pcr, "quote_pcrs")
    for bank, values in policy.pcrs.items():
        size = ALGORITHMS_BY_NAME[bank].size if bank in ALGORITHMS_BY_NAME else None
        if size is None:
            raise _invalid(f"pcrs.{bank}", "unknown PCR bank")
        for pcr, value in values.items():
            _pcr_index(pcr, f"pcrs.{bank}.{pcr}")
            if len(value) != size:
                raise _invalid(f"pcrs.{bank}.{pcr}", f"must be {size} bytes, found {len(value)}")
    for index, app in enumerate(policy.boot_applications):
        if len(app.sha256) != 32:
            raise _invalid(f"boot_applications.{index}.sha256", "must be 32 bytes")
    for index, setting in enumerate(policy.kernel_cmdline_required):
        if not setting or setting.split() != [setting]:
            raise _invalid(
                f"kernel_cmdline_required.{index}",
                f"{setting!r} must be one command-line word (like 'ro' or 'lockdown=integrity')",
            )
    pinned = any(values for values in policy.pcrs.values())
    if not (
        pinned or policy.boot_applications or policy.require_secure_boot or policy.has_cmdline_rule
    ):
        raise PolicyInvalid(
            f"Reference policy {policy.name!r} checks nothing: it has no PCR values, no "
            "boot-application allow-list, no Secure Boot requirement and no kernel command-line "
            "rule, so every host would pass it.",
            "Capture the policy from a known-good host, or add at least one rule (for example "
            '"require_secure_boot": true and the expected PCR 0 and 7 values).',
        )
    _check_coverage(policy)


def _check_coverage(policy: ReferencePolicy) -> None:
    quoted = set(policy.quote_pcrs)
    for bank, values in policy.pcrs.items():
        if values and bank != policy.quote_bank:
            raise PolicyInvalid(
                f"Reference policy {policy.name!r} has {bank} PCR values but the host quotes "
                f"the {policy.quote_bank} bank: those values could never be checked.",
                f"Give the PCR values of the {policy.quote_bank} bank, or set quote_bank to "
                f"{bank}.",
                field=f"pcrs.{bank}",
            )
    needs: list[tuple[str, set[int]]] = [
        (f"PCR {pcr} (a value the policy expects)", {pcr})
        for pcr in sorted(policy.pcrs.get(policy.quote_bank, {}))
    ]
    if policy.boot_applications:
        needs.append(("PCR 4 (boot applications)", {APPLICATION_PCR}))
    if policy.require_secure_boot:
        needs.append(("PCR 7 (Secure Boot)", {SECURE_BOOT_PCR}))
    if policy.has_cmdline_rule:
        needs.append(("PCR 8 or 12 (kernel command line)", set(CMDLINE_PCRS)))
    missing = [what for what, pcrs in needs if not pcrs & quoted]
    if missing:
        raise PolicyInvalid(
            f"Reference policy {policy.name!r} checks {', '.join(missing)} but does not have "
            f"the host quote it (quote_pcrs: {sorted(quoted)}): an unquoted PCR, and the events "
            "in it, prove nothing.",
            "Add those PCRs to quote_pcrs.",
            field="quote_pcrs",
        )


# --- what the event log proves ---------------------------------------------------------------

_SEPARATORS = (SEPARATOR_DATA, ERROR_SEPARATOR_DATA, LEGACY_SEPARATOR_DATA)
_TEXT_TYPES = (EventType.EV_EFI_ACTION, EventType.EV_ACTION)
_MAX_ACTION_TEXT = 256


def _is_marker(event: Event) -> bool:
    """A PCR 4 event that loads no code: a separator or a short action string, its digest
    verified over its data. Anything else measured there is treated as code, whatever its
    type says (the type is not measured: an image logged as a driver or an action string is
    still an image)."""
    data = event.data
    if event.event_type == EventType.EV_SEPARATOR:
        return data in _SEPARATORS and binding(event).verified
    if event.event_type in _TEXT_TYPES:
        text = data.rstrip(b"\0")
        return (
            len(data) <= _MAX_ACTION_TEXT
            and text.isascii()
            and text.decode("ascii").isprintable()
            and binding(event).verified
        )
    return False


def loaded_code(log: EventLog) -> list[tuple[Event, str | None]]:
    """The PCR 4 events whose digests the boot-application allow-list must hold, with the path
    an EV_EFI_BOOT_SERVICES_APPLICATION names (unverified: no digest covers it) or None."""
    paths = {app.event.index: app.name for app in boot_applications(log)}
    return [
        (event, paths.get(event.index))
        for event in log.events
        if event.pcr == APPLICATION_PCR and event.extended and not _is_marker(event)
    ]


def verified_secure_boot(log: EventLog) -> tuple[bool | None, Event | None]:
    """Secure Boot on/off from a SecureBoot variable whose name and value its digest covers;
    None (with the event, if there is one) when the log has none, or none that can be relied on
    (unreadable, forged, or measured by its value alone)."""
    try:
        found = secure_boot_event(log)
    except EventLogError:
        return None, None
    if found is None:
        return None, None
    event, variable = found
    if not binding(event).fully_verified or len(variable.data) != 1:
        return None, event
    return variable.data != b"\0", event


# --- capture ---------------------------------------------------------------------------------


def capture_policy(
    name: str,
    eventlog: EventLog | None,
    pcrs: Mapping[str, Mapping[int, bytes]],
    *,
    bank: str = "sha256",
    pin_pcrs: Iterable[int] = DEFAULT_PINNED_PCRS,
    quote_pcrs: Iterable[int] | None = None,
    description: str = "",
) -> ReferencePolicy:
    """A "golden" policy from a known-good host's verified PCR values and event log.

    Pins the ``pin_pcrs`` values of ``bank``; from the log: allows the boot applications of
    PCR 4 (their SHA-256 digests), requires Secure Boot if it is on, and allows the kernel
    command line booted. Quotes ``quote_pcrs``, by default every boot PCR the log measures
    into plus the pinned ones. Raises :class:`PolicyInvalid` if a pinned PCR is missing from
    ``pcrs`` or the result would check nothing.
    """
    values = pcrs.get(bank)
    if values is None:
        raise PolicyInvalid(
            f"Cannot capture a policy: the host's PCR values have no {bank} bank "
            f"(banks: {', '.join(pcrs) or 'none'}).",
            f"Read the {bank} PCRs of the host (the SHA-256 bank must be active), or capture "
            "for a bank it has.",
            field="pcrs",
        )
    pinned: dict[int, bytes] = {}
    for pcr in pin_pcrs:
        if pcr not in values:
            raise PolicyInvalid(
                f"Cannot capture a policy: {bank} PCR {pcr} is not among the host's PCR values.",
                "Read that PCR from the host, or leave it out of the PCRs to pin.",
                field=f"pcrs.{bank}.{pcr}",
            )
        pinned[pcr] = bytes(values[pcr])
    apps: list[AllowedApplication] = []
    secure_boot = False
    cmdlines: tuple[str, ...] = ()
    quoted = set(pinned)
    if eventlog is not None:
        forged = forged_events(eventlog.events)
        if forged:
            raise PolicyInvalid(
                f"Cannot capture a policy: {forged_message(forged[0])}.",
                "Capture the policy from another known-good host, or from this one after a "
                "reboot that records an intact event log.",
                field="eventlog",
            )
        seen: set[bytes] = set()
        for event, path in loaded_code(eventlog):
            digest = event.digests.get("sha256")
            if digest is not None and digest not in seen:
                seen.add(digest)
                apps.append(AllowedApplication(digest, path))
        secure_boot = verified_secure_boot(eventlog)[0] is True
        found = kernel_cmdlines(eventlog)
        if found and found[-1].verified:  # an unverified command line could never be checked
            cmdlines = (found[-1].text,)
            quoted.add(found[-1].event.pcr)
        quoted |= set(eventlog.pcrs()) & BOOT_PCRS
        if apps:
            quoted.add(APPLICATION_PCR)
        if secure_boot:
            quoted.add(SECURE_BOOT_PCR)
    return ReferencePolicy(
        name=name,
        description=description,
        pcrs={bank: pinned} if pinned else {},
        boot_applications=tuple(apps),
        require_secure_boot=secure_boot,
        kernel_cmdlines=cmdlines,
        quote_pcrs=tuple(sorted(quoted if quote_pcrs is None else set(quote_pcrs))),
        quote_bank=bank,
    )
