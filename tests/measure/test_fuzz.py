"""Fuzzing: random bytes and mutated real and written logs raise only EventLogError, quickly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostseal import measure
from hostseal.measure import EventLogError

from ._boots import boot_log
from ._corpus import CORPUS, GO_ATTESTATION_DATA, TPM2_TOOLS_FIXTURES

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIME_LIMIT = 2.0  # seconds per input; parsing a 50 KB log takes well under a millisecond

WRITTEN = boot_log()[0]
SPEC_ID_HEADER = WRITTEN[:69]
CORPUS_LOGS = [
    f"{TPM2_TOOLS_FIXTURES}/event-gce-ubuntu-2104-log.bin",
    f"{TPM2_TOOLS_FIXTURES}/event-sd-boot-fedora37.bin",
    f"{TPM2_TOOLS_FIXTURES}/event-uefi-sha1-log.bin",
    f"{TPM2_TOOLS_FIXTURES}/event-arch-linux.bin",
    f"{GO_ATTESTATION_DATA}/option_rom_eventlog",
    "go-tpm-tools/internal/test/eventlogs/gdc-host.bin",
]
HUGE = [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x10000, 0xFFFF, 0x100000000 - 12]


def exercise(raw: bytes) -> None:
    """Everything hostseal does with a log; only EventLogError may come out."""
    started = time.perf_counter()
    try:
        log = measure.parse_event_log(raw)
    except EventLogError as err:
        assert err.message and err.remedy
        return
    for call in (
        lambda: measure.replay(log),
        lambda: measure.secure_boot_state(log),
        lambda: measure.secure_boot_databases(log),
        lambda: measure.scrtm_version(log),
        lambda: measure.firmware_blobs(log),
        lambda: measure.authorities(log),
        lambda: measure.summarize(log),
        lambda: measure.compare_pcrs(log, measure.replay(log)),
        lambda: measure.diff_logs(log, BASE),
        lambda: measure.diff_logs(BASE, log),
        lambda: measure.kernel_cmdline(log),  # EventDataForged when the text was rewritten
    ):
        try:
            call()
        except EventLogError as err:
            assert err.message
    measure.boot_applications(log)
    measure.kernel_cmdlines(log)
    for event in log.events:
        assert measure.binding(event).status in ("verified", "unverified", "forged")
    measure.separators(log)
    measure.efi_actions(log)
    for event in log.events:
        assert measure.describe(event)
    assert len(log.events) <= len(raw) // 12 + 1  # nothing beyond what the input justifies
    assert time.perf_counter() - started < TIME_LIMIT


BASE = measure.parse_event_log(WRITTEN)


@st.composite
def mutated(draw: st.DrawFn, source: bytes) -> bytes:
    data = bytearray(source)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "truncate", "huge", "insert", "delete"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "huge":
            value = draw(st.sampled_from(HUGE))
            data[at : at + 4] = value.to_bytes(4, "little")
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(raw: bytes) -> None:
    exercise(raw)


@FUZZ
@given(st.binary(max_size=600))
def test_random_events_after_a_valid_header(raw: bytes) -> None:
    exercise(SPEC_ID_HEADER + raw)


@FUZZ
@given(mutated(WRITTEN))
def test_mutated_writer_output(raw: bytes) -> None:
    exercise(raw)


@pytest.fixture(scope="module")
def corpus_logs(corpus: Path) -> list[bytes]:
    return [(corpus / relative).read_bytes() for relative in CORPUS_LOGS]


_CORPUS_BYTES = [
    (CORPUS / relative).read_bytes() for relative in CORPUS_LOGS if (CORPUS / relative).is_file()
]


@pytest.mark.corpus
@FUZZ
@given(st.sampled_from(_CORPUS_BYTES or [WRITTEN]).flatmap(mutated))
def test_mutated_corpus_logs(corpus_logs: list[bytes], raw: bytes) -> None:
    assert corpus_logs
    exercise(raw)


def test_huge_counts_fail_fast() -> None:
    """A digest count or event size of 2**32-1 is refused before anything is allocated."""
    raw = bytearray(WRITTEN)
    raw[69 + 8 : 69 + 12] = (0xFFFFFFFF).to_bytes(4, "little")
    started = time.perf_counter()
    with pytest.raises(EventLogError, match="claims 4294967295 digests"):
        measure.parse_event_log(bytes(raw))
    assert time.perf_counter() - started < 0.1
