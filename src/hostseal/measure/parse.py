"""Parse TCG PC Client event logs: crypto-agile (TCG_PCR_EVENT2) and legacy SHA-1.

Every read is bounds-checked against the input; a malformed log raises :class:`EventLogError`
naming the event index and byte offset, never ``IndexError`` or ``struct.error``. Nothing is
allocated beyond what the input's length justifies (counts are checked against the bytes left
before anything is read or built).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hostseal.measure.errors import EventLogError
from hostseal.measure.events import (
    ALGORITHMS,
    FORMAT_CRYPTO_AGILE,
    FORMAT_LEGACY_SHA1,
    Algorithm,
    Event,
    EventLog,
    SpecIdEvent,
    algorithm_name,
)

SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\0"
EV_NO_ACTION = 3
PCR_COUNT = 24  # PC Client TPMs have PCR 0..23

_LEGACY_HEADER = struct.Struct("<II20sI")  # PCRIndex, EventType, SHA-1 digest, EventSize
_AGILE_HEADER = struct.Struct("<III")  # PCRIndex, EventType, TPML_DIGEST_VALUES.count
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SPEC_ID_FIXED = struct.Struct("<16sIBBBBI")  # signature .. numberOfAlgorithms
_ALG_SIZE = struct.Struct("<HH")

_NOT_A_LOG_REMEDY = (
    "Give hostseal the binary event log the kernel exposes at "
    "/sys/kernel/security/tpm0/binary_bios_measurements (not a text or YAML rendering of it)."
)


def parse_event_log(raw: bytes | bytearray | memoryview) -> EventLog:
    """Parse a binary TCG PC Client event log (crypto-agile or legacy SHA-1).

    Raises :class:`EventLogError` when the bytes are not a well-formed event log.
    """
    buf = bytes(raw)
    if not buf:
        raise EventLogError("The event log is empty (0 bytes).", _NOT_A_LOG_REMEDY)
    if len(buf) < _LEGACY_HEADER.size:
        raise EventLogError.at(
            0,
            0,
            f"the log is {len(buf)} bytes long, too short for even one event "
            f"({_LEGACY_HEADER.size} bytes)",
            _NOT_A_LOG_REMEDY,
        )
    pcr, event_type, _digest, size = _LEGACY_HEADER.unpack_from(buf, 0)
    start = _LEGACY_HEADER.size
    if (
        event_type == EV_NO_ACTION
        and size >= len(SPEC_ID_SIGNATURE)
        and buf[start : start + len(SPEC_ID_SIGNATURE)] == SPEC_ID_SIGNATURE
    ):
        if pcr != 0:
            raise EventLogError.at(
                0, 0, f"the Spec ID header event must be on PCR 0 but names PCR {pcr}"
            )
        if start + size > len(buf):
            raise EventLogError.at(
                0,
                0,
                f"the Spec ID header event claims {size} bytes of data but only "
                f"{len(buf) - start} are left",
            )
        spec_id, vendor_end = _parse_spec_id(buf, start)
        # The header ends where EventSize says; a header whose vendor information runs past
        # EventSize ends after the vendor information instead (tpm2-tools reads it that way,
        # and its specid-vendordata fixture depends on it).
        return _parse_crypto_agile(buf, spec_id, max(start + size, vendor_end))
    return _parse_legacy(buf)


def _parse_spec_id(buf: bytes, start: int) -> tuple[SpecIdEvent, int]:
    """The TCG_EfiSpecIDEvent at ``start``, and the offset where its vendor information ends."""

    def fail(what: str) -> EventLogError:
        return EventLogError.at(0, 0, f"Spec ID header: {what}")

    data = memoryview(buf)[start:]
    if len(data) < _SPEC_ID_FIXED.size + 1:
        raise fail(f"{len(data)} bytes, too short (needs at least {_SPEC_ID_FIXED.size + 1})")
    _sig, platform_class, minor, major, errata, uintn_size, count = _SPEC_ID_FIXED.unpack_from(
        data, 0
    )
    off = _SPEC_ID_FIXED.size
    if count == 0:
        raise fail("it declares no hash algorithms")
    if count * _ALG_SIZE.size + 1 > len(data) - off:
        raise fail(
            f"it declares {count} hash algorithms but has room for "
            f"{max(0, (len(data) - off - 1) // _ALG_SIZE.size)}"
        )
    algorithms: list[Algorithm] = []
    seen: set[int] = set()
    for _ in range(count):
        alg_id, digest_size = _ALG_SIZE.unpack_from(data, off)
        off += _ALG_SIZE.size
        if alg_id in seen:
            raise fail(f"hash algorithm {algorithm_name(alg_id)} is declared twice")
        seen.add(alg_id)
        known = ALGORITHMS.get(alg_id)
        if known is not None:
            if digest_size != known.size:
                raise fail(
                    f"{known.name} digests are {known.size} bytes, the header says {digest_size}"
                )
            algorithms.append(known)
        else:
            if digest_size == 0:
                raise fail(f"hash algorithm {algorithm_name(alg_id)} has a digest size of 0")
            algorithms.append(Algorithm(alg_id, algorithm_name(alg_id), digest_size))
    vendor_size = data[off]
    off += 1
    if vendor_size > len(data) - off:
        raise fail(
            f"vendor information of {vendor_size} bytes runs past the header's end "
            f"({len(data) - off} bytes left)"
        )
    spec_id = SpecIdEvent(
        platform_class=platform_class,
        spec_version=(major, minor, errata),
        uintn_size=uintn_size,
        algorithms=tuple(algorithms),
        vendor_info=bytes(data[off : off + vendor_size]),
    )
    return spec_id, start + off + vendor_size


class _Locality:
    """Tracks the StartupLocality event and that it comes before PCR 0 is extended."""

    __slots__ = ("pcr0_extended", "value")

    def __init__(self) -> None:
        self.value: int | None = None
        self.pcr0_extended = False

    def no_action(self, index: int, offset: int, pcr: int, data: bytes) -> None:
        if pcr != 0 or not data.startswith(STARTUP_LOCALITY_SIGNATURE):
            return
        if len(data) < len(STARTUP_LOCALITY_SIGNATURE) + 1:
            raise EventLogError.at(index, offset, "StartupLocality event without a locality byte")
        if self.value is not None:
            raise EventLogError.at(index, offset, "a second StartupLocality event")
        if self.pcr0_extended:
            raise EventLogError.at(
                index, offset, "StartupLocality event after PCR 0 was already extended"
            )
        locality = data[len(STARTUP_LOCALITY_SIGNATURE)]
        if locality not in (0, 1, 2, 3, 4):
            raise EventLogError.at(
                index, offset, f"StartupLocality event names locality {locality} (allowed: 0-4)"
            )
        self.value = locality


def _raise_pcr_out_of_range(index: int, offset: int, pcr: int) -> None:
    raise EventLogError.at(
        index, offset, f"the event extends PCR {pcr}, but a PC Client TPM has PCR 0-23 only"
    )


def _parse_legacy(buf: bytes) -> EventLog:
    events: list[Event] = []
    append = events.append
    unpack = _LEGACY_HEADER.unpack_from
    header_size = _LEGACY_HEADER.size
    locality = _Locality()
    n = len(buf)
    off = 0
    index = 0
    while off < n:
        if n - off < header_size:
            raise EventLogError.at(
                index,
                off,
                f"truncated: {n - off} bytes left, an event header needs {header_size}",
            )
        pcr, event_type, digest, size = unpack(buf, off)
        start = off + header_size
        end = start + size
        if end > n:
            raise EventLogError.at(
                index,
                off,
                f"event data of {size} bytes runs past the end of the log ({n - start} bytes left)",
            )
        data = buf[start:end]
        if event_type == EV_NO_ACTION:
            locality.no_action(index, off, pcr, data)
        else:
            if pcr >= PCR_COUNT:
                _raise_pcr_out_of_range(index, off, pcr)
            if pcr == 0:
                locality.pcr0_extended = True
        append(Event(index, off, pcr, event_type, {"sha1": digest}, data))
        off = end
        index += 1
    return EventLog(
        format=FORMAT_LEGACY_SHA1,
        banks=("sha1",),
        events=events,
        startup_locality=locality.value,
        size=n,
    )


def _parse_crypto_agile(buf: bytes, spec_id: SpecIdEvent, header_end: int) -> EventLog:
    n = len(buf)
    _pcr, header_type, header_digest, _size = _LEGACY_HEADER.unpack_from(buf, 0)
    events: list[Event] = [
        Event(0, 0, 0, header_type, {"sha1": header_digest}, buf[_LEGACY_HEADER.size : header_end])
    ]
    append = events.append
    algorithms = spec_id.algorithms
    by_id = {a.alg_id: a for a in algorithms}
    n_algs = len(algorithms)
    ids = tuple(a.alg_id for a in algorithms)
    names = tuple(a.name for a in algorithms)
    # The usual layout: every bank of the header, in the header's order. One unpack reads the
    # PCR, type, count, the (alg, digest) pairs and the event size.
    whole = struct.Struct("<III" + "".join(f"H{a.size}s" for a in algorithms) + "I")
    whole_unpack = whole.unpack_from
    whole_size = whole.size
    digests_of = _digest_builder(ids, names)
    unpack_header = _AGILE_HEADER.unpack_from
    unpack_u32 = _U32.unpack_from
    no_action = EV_NO_ACTION
    pcr_count = PCR_COUNT
    locality = _Locality()
    off = header_end
    index = 1
    while off < n:
        digests: dict[str, bytes] | None = None
        if n - off >= whole_size:
            values = whole_unpack(buf, off)
            digests = digests_of(values)
            if digests is not None:
                pcr, event_type, size = values[0], values[1], values[-1]
                p = off + whole_size
        if digests is None:  # an unusual layout, or too few bytes left: check step by step
            if n - off < 12:
                raise EventLogError.at(
                    index, off, f"truncated: {n - off} bytes left, an event header needs 16 or more"
                )
            pcr, event_type, count = unpack_header(buf, off)
            digests, p = _digests_slow(buf, index, off, off + 12, count, n_algs, by_id)
            if n - p < 4:
                raise EventLogError.at(
                    index,
                    off,
                    f"truncated: {n - p} bytes left where the event size (4 bytes) belongs",
                )
            (size,) = unpack_u32(buf, p)
            p += 4
        end = p + size
        if end > n:
            raise EventLogError.at(
                index,
                off,
                f"event data of {size} bytes runs past the end of the log ({n - p} bytes left)",
            )
        data = buf[p:end]
        if event_type == no_action:
            locality.no_action(index, off, pcr, data)
        elif pcr == 0:
            locality.pcr0_extended = True
        elif pcr >= pcr_count:
            _raise_pcr_out_of_range(index, off, pcr)
        append(Event(index, off, pcr, event_type, digests, data))
        off = end
        index += 1
    return EventLog(
        format=FORMAT_CRYPTO_AGILE,
        banks=names,
        events=events,
        spec_id=spec_id,
        startup_locality=locality.value,
        size=n,
    )


_DigestBuilder = Callable[[tuple[Any, ...]], "dict[str, bytes] | None"]


def _digest_builder(ids: tuple[int, ...], names: tuple[str, ...]) -> _DigestBuilder:
    """A function from the unpacked (pcr, type, count, alg, digest, alg, digest, ..., size)
    tuple to the digests, or None when the count or the algorithms are not the header's (in its
    order). Specialised for 1-3 banks: this runs once per event and generic slicing and
    ``dict(zip(...))`` would cost as much as the rest of the parse."""
    count = len(ids)
    if count == 1:
        (i0,), (n0,) = ids, names
        return lambda v: {n0: v[4]} if v[2] == 1 and v[3] == i0 else None
    if count == 2:
        (i0, i1), (n0, n1) = ids, names
        return lambda v: {n0: v[4], n1: v[6]} if v[2] == 2 and v[3] == i0 and v[5] == i1 else None
    if count == 3:
        (i0, i1, i2), (n0, n1, n2) = ids, names
        return lambda v: (
            {n0: v[4], n1: v[6], n2: v[8]}
            if v[2] == 3 and v[3] == i0 and v[5] == i1 and v[7] == i2
            else None
        )
    return lambda v: (
        dict(zip(names, v[4:-1:2], strict=False)) if v[2] == count and v[3:-1:2] == ids else None
    )


def _digests_slow(
    buf: bytes,
    index: int,
    off: int,
    p: int,
    count: int,
    n_algs: int,
    by_id: dict[int, Algorithm],
) -> tuple[dict[str, bytes], int]:
    """Digests in an unusual order, or fewer than the header declares; checked one by one."""
    if count > n_algs:
        raise EventLogError.at(
            index,
            off,
            f"the event claims {count} digests but the header declares only {n_algs} hash "
            "algorithms",
        )
    n = len(buf)
    digests: dict[str, bytes] = {}
    for _ in range(count):
        if n - p < 2:
            raise EventLogError.at(
                index, off, f"truncated inside the digest list ({n - p} bytes left)"
            )
        (alg_id,) = _U16.unpack_from(buf, p)
        p += 2
        alg = by_id.get(alg_id)
        if alg is None:
            raise EventLogError.at(
                index,
                off,
                f"digest of hash algorithm {algorithm_name(alg_id)}, which the header does not "
                "declare",
            )
        if alg.name in digests:
            raise EventLogError.at(index, off, f"two {alg.name} digests")
        if n - p < alg.size:
            raise EventLogError.at(
                index,
                off,
                f"truncated {alg.name} digest ({n - p} of {alg.size} bytes left)",
            )
        digests[alg.name] = buf[p : p + alg.size]
        p += alg.size
    return digests, p
