"""What an attacker with root on a host does to its event log: rewrite an event's data (and,
if it likes, its type, or its digests in banks the quote does not cover), leaving the digests
that replay to the quoted PCRs untouched."""

from __future__ import annotations

import hashlib

from hostseal.measure import EventLogWriter, EventType, parse_event_log


def rewrite(
    raw: bytes,
    index: int,
    data: bytes | None = None,
    *,
    event_type: int | None = None,
    match: dict[str, bytes] | None = None,
) -> bytes:
    """``raw`` with event ``index``'s data (and/or type) replaced. ``match`` maps a bank to the
    preimage whose hash the attacker writes as that bank's digest (so that the forged data
    "verifies" in that bank); every other digest is left as measured."""
    log = parse_event_log(raw)
    writer = EventLogWriter(banks=log.banks)
    for event in log.events[1:]:
        if not event.extended:
            writer.add_no_action(event.data)
            continue
        digests = dict(event.digests)
        new_data, new_type = event.data, event.event_type
        if event.index == index:
            new_data = event.data if data is None else data
            new_type = event.event_type if event_type is None else event_type
            for bank, preimage in (match or {}).items():
                digests[bank] = hashlib.new(bank, preimage).digest()
        writer.add(event.pcr, new_type, new_data, digests=digests)
    return writer.to_bytes()


def find(raw: bytes, pcr: int, event_type: int, contains: bytes = b"") -> int:
    """The index of the first event of ``event_type`` on ``pcr`` whose data has ``contains``."""
    for event in parse_event_log(raw).events:
        if event.pcr == pcr and event.event_type == event_type and contains in event.data:
            return event.index
    raise LookupError(f"no {EventType(event_type).name} on PCR {pcr} with {contains!r}")
