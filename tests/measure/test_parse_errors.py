"""Malformed logs: each failure is an EventLogError saying where and what, with a remedy."""

from __future__ import annotations

import struct

import pytest

from hostseal.measure import EventLogError, EventLogWriter, EventType, parse_event_log, replay
from hostseal.measure import events as events_module

HEADER = 69  # a (sha1, sha256) writer log's Spec ID header event
FIRST = HEADER  # offset of the first TCG_PCR_EVENT2


def _two_events() -> bytes:
    w = EventLogWriter(banks=("sha1", "sha256"))
    w.add(0, EventType.EV_POST_CODE, b"POST CODE")
    w.add(7, EventType.EV_SEPARATOR, b"\0\0\0\0")
    return w.to_bytes()


def _error(raw: bytes) -> EventLogError:
    with pytest.raises(EventLogError) as caught:
        replay(parse_event_log(raw))
    assert type(caught.value) is EventLogError
    assert caught.value.remedy
    return caught.value


def _patch(raw: bytes, offset: int, fmt: str, *values: object) -> bytes:
    data = bytearray(raw)
    struct.pack_into(fmt, data, offset, *values)
    return bytes(data)


def test_a_well_formed_log_parses() -> None:
    log = parse_event_log(_two_events())
    assert [e.offset for e in log.events][:2] == [0, FIRST]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda raw: raw[:10],
            "Event log: event 0 at offset 0 (0x0): the log is 10 bytes long, too short for even "
            "one event (32 bytes).",
        ),
        (
            lambda raw: raw[: FIRST + 5],
            "Event log: event 1 at offset 69 (0x45): truncated: 5 bytes left, an event header "
            "needs 16 or more.",
        ),
        (
            lambda raw: raw[:-3],
            "Event log: event 2 at offset 150 (0x96): event data of 4 bytes runs past the end of "
            "the log (1 bytes left).",
        ),
        (
            lambda raw: _patch(raw, FIRST + 8, "<I", 0xFFFFFFFF),
            "Event log: event 1 at offset 69 (0x45): the event claims 4294967295 digests but the "
            "header declares only 2 hash algorithms.",
        ),
        (
            lambda raw: _patch(raw, FIRST + 12, "<H", 0x0012),
            "Event log: event 1 at offset 69 (0x45): digest of hash algorithm sm3_256, which the "
            "header does not declare.",
        ),
        (
            lambda raw: _patch(raw, FIRST + 12 + 22, "<H", 0x0004),
            "Event log: event 1 at offset 69 (0x45): two sha1 digests.",
        ),
        (
            lambda raw: _patch(raw, FIRST + 12 + 22 + 34, "<I", 0x7FFFFFFF),
            "Event log: event 1 at offset 69 (0x45): event data of 2147483647 bytes runs past the "
            "end of the log (85 bytes left).",
        ),
        (
            lambda raw: _patch(raw, FIRST, "<I", 24),
            "Event log: event 1 at offset 69 (0x45): the event extends PCR 24, but a PC Client "
            "TPM has PCR 0-23 only.",
        ),
        (
            lambda raw: _patch(raw, 32 + 24, "<I", 0),
            "Event log: event 0 at offset 0 (0x0): Spec ID header: it declares no hash algorithms.",
        ),
        (
            lambda raw: _patch(raw, 32 + 24, "<I", 1 << 30),
            "Event log: event 0 at offset 0 (0x0): Spec ID header: it declares 1073741824 hash "
            "algorithms but has room for 41.",
        ),
        (
            lambda raw: _patch(raw, 32 + 34, "<H", 20),
            "Event log: event 0 at offset 0 (0x0): Spec ID header: sha256 digests are 32 bytes, "
            "the header says 20.",
        ),
        (
            lambda raw: _patch(raw, 32 + 32, "<H", 0x0004),
            "Event log: event 0 at offset 0 (0x0): Spec ID header: hash algorithm sha1 is "
            "declared twice.",
        ),
        (
            lambda raw: _patch(raw, 28, "<I", 1000),
            "Event log: event 0 at offset 0 (0x0): the Spec ID header event claims 1000 bytes of "
            "data but only 194 are left.",
        ),
    ],
)
def test_malformed_logs(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(mutate(_two_events()))
    assert err.message == message
    assert str(err) == f"{err.message} {err.remedy}"
    assert err.to_dict()["event_index"] == err.event_index


def test_startup_locality_rules() -> None:
    w = EventLogWriter(banks=("sha256",))
    w.add_startup_locality(3)
    w.add_no_action(b"StartupLocality\0\x03")  # a second one
    assert _error(w.to_bytes()).message.endswith("a second StartupLocality event.")
    w = EventLogWriter(banks=("sha256",))
    w.add(0, EventType.EV_POST_CODE, b"x")
    w._pcr0_extended = False  # the writer refuses; write one anyway
    w.add_startup_locality(3)
    assert _error(w.to_bytes()).message.endswith(
        "StartupLocality event after PCR 0 was already extended."
    )
    w = EventLogWriter(banks=("sha256",))
    w.add_no_action(b"StartupLocality\0\x09")
    assert _error(w.to_bytes()).message.endswith(
        "StartupLocality event names locality 9 (allowed: 0-4)."
    )


def test_missing_bank_digest_is_a_replay_error() -> None:
    raw = bytearray(_two_events())
    # Rewrite event 2 (the separator) to carry only its sha1 digest.
    second = parse_event_log(bytes(raw)).events[2].offset
    head = raw[second : second + 8] + struct.pack("<I", 1) + raw[second + 12 : second + 34]
    tail = struct.pack("<I", 4) + b"\0\0\0\0"
    log = parse_event_log(bytes(raw[:second]) + bytes(head) + tail)
    assert set(replay(log, ["sha1"])) == {"sha1"}
    with pytest.raises(EventLogError) as caught:
        replay(log)
    assert caught.value.message == (
        "Event log: event 2 at offset 150 (0x96): the event extends PCR 7 but has no sha256 "
        "digest, although other events have one, so the sha256 bank cannot be replayed."
    )


def test_unavailable_sm3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(events_module.HASH_FUNCTIONS, "sm3_256", raising=False)
    with pytest.raises(EventLogError) as caught:
        events_module.hash_function("sm3_256")
    assert caught.value.message == (
        "Cannot compute the sm3_256 PCR bank: neither this Python's hashlib (OpenSSL) nor the "
        "cryptography package offers SM3."
    )
    with pytest.raises(EventLogError, match="hostseal does not know this hash algorithm"):
        events_module.hash_function("alg_0x1234")


def test_legacy_log_errors() -> None:
    event = struct.pack("<II20sI", 0, EventType.EV_POST_CODE, bytes(20), 4) + b"abcd"
    assert parse_event_log(event).format == "legacy_sha1"
    assert _error(event + event[:20]).message == (
        "Event log: event 1 at offset 36 (0x24): truncated: 20 bytes left, an event header "
        "needs 32."
    )
    assert _error(event[:-1]).message == (
        "Event log: event 0 at offset 0 (0x0): event data of 4 bytes runs past the end of the "
        "log (3 bytes left)."
    )
