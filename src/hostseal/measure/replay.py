"""Replay an event log to PCR values, and compare them with a TPM's (read or quoted) PCRs.

Replay rules (TCG PC Client Platform Firmware Profile):

* every event but EV_NO_ACTION is extended: ``PCR = H(PCR || digest)``, with the event's digest
  for that bank as logged (the digest is *not* recomputed from the event data: for many types,
  e.g. boot applications or H-CRTM events, it is the hash of something not in the log);
* PCRs start at zero, except PCR 17-22 (DRTM) which start at all-ones, and PCR 0 which starts at
  ``00..0<locality>`` when the log has a StartupLocality event (locality 3 for a TPM started at
  locality 3), and at ``00..04`` when the log has an EV_EFI_HCRTM_EVENT on PCR 0, whatever the
  StartupLocality event says or if there is none: an H-CRTM hash sequence that ends before
  TPM2_Startup resets PCR 0 to ``00..04`` and extends the H-CRTM digest (TPM Library Part 1,
  H-CRTM; Part 3, ``_TPM_Hash_End``), and TPM2_Startup then leaves PCR 0 alone. That digest is
  the EV_EFI_HCRTM_EVENT's, an ordinary extend;
* a bank is replayed only if the log carries its digests; an extended event missing a digest
  that other events carry makes the bank unreplayable (an error, not a guess).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from hostseal.measure.errors import EventLogError, EventLogReplayMismatch
from hostseal.measure.events import (
    ALGORITHMS_BY_NAME,
    HASH_FUNCTIONS,
    Event,
    EventLog,
    hash_function,
)

EV_NO_ACTION = 3
EV_EFI_ACTION = 0x80000007
EV_EFI_HCRTM_EVENT = 0x80000010
HCRTM_LOCALITY = 4  # _TPM_Hash_Start comes from locality 4; PCR 0 is reset to 00..04
FIRMWARE_PCRS = range(8)  # PCR 0-7 belong to the firmware: an untouched one must be at reset
EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_SUCCESS = b"Exit Boot Services Returned with Success"

_FAST_CONSTRUCTORS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}


def initial_value(bank_size: int, pcr: int, locality: int | None = None) -> bytes:
    """A PCR's value after TPM2_Startup (or H-CRTM) as the log describes it."""
    if 17 <= pcr <= 22:
        return b"\xff" * bank_size
    if pcr == 0 and locality:
        return bytes(bank_size - 1) + bytes((locality,))
    return bytes(bank_size)


def pcr0_locality(log: EventLog) -> int | None:
    """The locality PCR 0 starts from (its last byte): 4 after an H-CRTM, which the log shows by
    an EV_EFI_HCRTM_EVENT on PCR 0, else the StartupLocality event's (``None``: no such event)."""
    return _pcr0_locality(log, log.events)


def _pcr0_locality(log: EventLog, events: Iterable[Event]) -> int | None:
    for event in events:
        if event.pcr == 0 and event.event_type == EV_EFI_HCRTM_EVENT:
            return HCRTM_LOCALITY
    return log.startup_locality


def _bank_size(log: EventLog, bank: str) -> int:
    if log.spec_id is not None:
        for alg in log.spec_id.algorithms:
            if alg.name == bank:
                return alg.size
    known = ALGORITHMS_BY_NAME.get(bank)
    if known is None:
        raise EventLogError(f"Unknown PCR bank {bank!r}.", "Use sha1, sha256, sha384 or sha512.")
    return known.size


def logged_banks(log: EventLog) -> tuple[str, ...]:
    """The banks the log has digests for (in header order); banks declared but never used drop."""
    declared = set(log.banks)
    used: set[str] = set()
    for event in log.events[1:] if log.spec_id is not None else log.events:
        if event.event_type != EV_NO_ACTION:
            used.update(event.digests)
            if used >= declared:  # every declared bank seen: the rest cannot add one
                break
    return tuple(b for b in log.banks if b in used)


def replayable_banks(log: EventLog) -> tuple[str, ...]:
    """The logged banks hostseal can compute here (SM3 needs an OpenSSL with SM3)."""
    return tuple(b for b in logged_banks(log) if b in HASH_FUNCTIONS)


def replay(log: EventLog, banks: Iterable[str] | None = None) -> dict[str, dict[int, bytes]]:
    """The final PCR values the log describes: bank -> PCR index -> value.

    Only PCRs the log extends appear (and PCR 0 when a StartupLocality event sets it). PCR 0
    starts as :func:`pcr0_locality` says (``00..04`` after an H-CRTM). With
    ``banks=None`` every bank the log carries and hostseal can compute is replayed; a bank
    asked for by name that cannot be replayed raises :class:`EventLogError`.
    """
    if banks is None:
        wanted = replayable_banks(log)
    else:
        wanted = tuple(banks)
        _check_banks(wanted, logged_banks(log))
    return _replay(log, wanted)


def _check_banks(wanted: tuple[str, ...], logged: tuple[str, ...]) -> None:
    for bank in wanted:
        hash_function(bank)  # raises if hostseal cannot compute this bank
        if bank not in logged:
            raise EventLogError(
                f"The event log has no {bank} digests (it has: {', '.join(logged) or 'none'}).",
                "Compare the PCR bank the firmware logged, usually sha256.",
            )


def _replay(log: EventLog, wanted: tuple[str, ...]) -> dict[str, dict[int, bytes]]:
    extended = [e for e in log.events if e.event_type != EV_NO_ACTION]
    locality = _pcr0_locality(log, extended)
    return {bank: _replay_bank(log, bank, extended, locality) for bank in wanted}


def _replay_bank(
    log: EventLog, bank: str, extended: list[Event], locality: int | None
) -> dict[int, bytes]:
    size = _bank_size(log, bank)
    current = [initial_value(size, pcr, locality) for pcr in range(24)]
    touched: set[int] = set() if locality is None else {0}
    constructor = _FAST_CONSTRUCTORS.get(bank)
    try:
        if constructor is not None:  # the hot loop: hashlib's constructor, no indirection
            for event in extended:
                pcr = event.pcr
                current[pcr] = constructor(current[pcr] + event.digests[bank]).digest()
                touched.add(pcr)
        else:
            function = hash_function(bank)
            for event in extended:
                pcr = event.pcr
                current[pcr] = function(current[pcr] + event.digests[bank])
                touched.add(pcr)
    except KeyError:
        missing = next(e for e in extended if bank not in e.digests)
        raise EventLogError.at(
            missing.index,
            missing.offset,
            f"the event extends PCR {missing.pcr} but has no {bank} digest, although other "
            f"events have one, so the {bank} bank cannot be replayed",
        ) from None
    return {pcr: current[pcr] for pcr in sorted(touched)}


# --- comparison with a TPM's PCRs ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PcrMismatch:
    """One PCR whose replayed value (``expected``) differs from the TPM's (``actual``)."""

    bank: str
    pcr: int
    expected: bytes
    actual: bytes
    events: tuple[Event, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "pcr": self.pcr,
            "expected": self.expected.hex(),
            "actual": self.actual.hex(),
            "events": [e.index for e in self.events],
        }


def compare_pcrs(
    log: EventLog,
    pcrs: Mapping[str, Mapping[int, bytes]],
    *,
    ebs_workaround: bool = False,
) -> list[PcrMismatch]:
    """Compare the replayed log with PCR values read from a TPM or taken from a quote.

    Compared are the banks present in both, and of those the PCRs given in ``pcrs`` that the
    log extends, plus PCR 0-7 even if the log does not extend them (they belong to the firmware:
    untouched, they must hold their reset value). PCRs 8-23 the log never extends (IMA's PCR 10,
    systemd's) are not compared. Raises :class:`EventLogError` when no bank is in common, so an
    empty comparison never passes for a match.

    ``ebs_workaround`` accepts a PCR 5 that matches only once the two EV_EFI_ACTION events of
    ExitBootServices are added, for firmware that measures but does not log them (go-attestation
    does the same); it is off by default.
    """
    logged = logged_banks(log)
    common = [b for b in logged if b in pcrs]
    if not common:
        raise EventLogError(
            "The event log and the PCR values share no bank: the log has "
            f"{', '.join(logged) or 'no digests'}, the PCRs are {', '.join(pcrs) or 'none'}.",
            "Read the PCR bank the firmware logged (usually sha256) and compare that.",
        )
    replayed = _replay(log, tuple(common))  # the banks are known to be logged
    locality = pcr0_locality(log)
    mismatches: list[PcrMismatch] = []
    for bank in common:
        size = _bank_size(log, bank)
        values = replayed[bank]
        for pcr in sorted(pcrs[bank]):
            actual = bytes(pcrs[bank][pcr])
            if pcr in values:
                expected = values[pcr]
            elif pcr in FIRMWARE_PCRS:
                expected = initial_value(size, pcr, locality)
            else:
                continue
            if actual == expected:
                continue
            if ebs_workaround and pcr == 5 and _ebs_explains(log, bank, expected, actual):
                continue
            events = tuple(e for e in log.events if e.pcr == pcr and e.event_type != EV_NO_ACTION)
            mismatches.append(PcrMismatch(bank, pcr, expected, actual, events))
    return mismatches


def verify_pcrs(
    log: EventLog, pcrs: Mapping[str, Mapping[int, bytes]], *, ebs_workaround: bool = False
) -> None:
    """Like :func:`compare_pcrs`, but raise :class:`EventLogReplayMismatch` on any mismatch."""
    mismatches = compare_pcrs(log, pcrs, ebs_workaround=ebs_workaround)
    if mismatches:
        raise EventLogReplayMismatch(mismatches)


def _ebs_explains(log: EventLog, bank: str, expected: bytes, actual: bytes) -> bool:
    for event in log.events:
        if event.pcr == 5 and event.event_type == EV_EFI_ACTION and event.data == EBS_INVOCATION:
            return False  # the log has the events; the workaround does not apply
    h = hash_function(bank)
    value = h(expected + h(EBS_INVOCATION))
    value = h(value + h(EBS_SUCCESS))
    return value == actual
