"""Every corpus log replays to the PCRs its source project states; invalid logs are refused."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from hostseal.measure import (
    EventLogError,
    EventLogWriter,
    EventType,
    compare_pcrs,
    parse_event_log,
    replay,
)

from ._corpus import (
    GO_ATTESTATION,
    GO_TPM_TOOLS,
    TPM2_TOOLS,
    TPM2_TOOLS_FIXTURES,
    bank_cases,
    go_attestation_log,
    hex_value,
)

pytestmark = pytest.mark.corpus


def _log(corpus: Path, relative: str):  # type: ignore[no-untyped-def]
    return parse_event_log((corpus / relative).read_bytes())


# --- go-tpm-tools: server/eventlog_test.go ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bank", "pcrs"),
    bank_cases(GO_TPM_TOOLS, "expected_pcrs"),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_go_tpm_tools_logs_replay_to_the_stated_pcrs(
    corpus: Path, name: str, bank: str, pcrs: dict[str, str]
) -> None:
    entry = GO_TPM_TOOLS[name]
    log = _log(corpus, "go-tpm-tools/" + entry["file"])
    replayed = replay(log, [bank])[bank]
    assert {str(p): v.hex() for p, v in replayed.items() if str(p) in pcrs} == {
        p: v.lower() for p, v in pcrs.items()
    }
    assert len(log.events) == entry["num_events_incl_header"]
    assert log.format == {"tcg2": "crypto_agile", "sha1": "legacy_sha1"}[entry["log_format"]]
    assert list(log.banks) == entry["digest_algs_in_log"]


def test_go_tpm_tools_replay_failure_is_reported_as_a_mismatch(corpus: Path) -> None:
    # TestParseMachineStateReplayFail: Debian 10 against a PCR 0 of 00000000 must not replay.
    log = _log(corpus, "go-tpm-tools/internal/test/eventlogs/debian-10.bin")
    mismatches = compare_pcrs(log, {"sha1": {0: bytes(4)}})
    assert [(m.bank, m.pcr, m.actual) for m in mismatches] == [("sha1", 0, bytes(4))]


# --- tpm2-tools: the pcrs: block of tpm2_eventlog's YAML -----------------------------------


@pytest.mark.parametrize(
    ("name", "bank", "pcrs"),
    bank_cases(TPM2_TOOLS, "expected_pcrs_from_yaml"),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_tpm2_tools_logs_replay_to_the_yaml_pcrs(
    corpus: Path, name: str, bank: str, pcrs: dict[str, str]
) -> None:
    entry = TPM2_TOOLS[name]
    log = _log(corpus, f"{TPM2_TOOLS_FIXTURES}/{name}")
    replayed = replay(log, [bank])[bank]
    assert {str(p): v.hex() for p, v in replayed.items()} == {
        p: hex_value(v).hex() for p, v in pcrs.items()
    }
    assert len(log.events) == entry["yaml_event_count"]


def test_tpm2_tools_event_bin_replays_sha384_and_sha512(corpus: Path) -> None:
    """event.bin is not in the derived JSON; its YAML's pcrs: block has all four banks."""
    fixtures = corpus / TPM2_TOOLS_FIXTURES
    yaml_text = (fixtures / "event.bin.yaml").read_text()
    expected: dict[str, dict[int, str]] = {}
    bank = ""
    for line in yaml_text.split("pcrs:", 1)[1].splitlines():
        if m := re.match(r"^\s+(\w+):$", line):
            bank = m.group(1)
        elif m := re.match(r"^\s+(\d+)\s*:\s*0x([0-9a-f]+)$", line):
            expected.setdefault(bank, {})[int(m.group(1))] = m.group(2)
    assert set(expected) == {"sha1", "sha256", "sha384", "sha512"}
    replayed = replay(parse_event_log((fixtures / "event.bin").read_bytes()))
    assert {b: {p: v.hex() for p, v in pcrs.items()} for b, pcrs in replayed.items()} == expected


def test_tpm2_tools_specid_vendordata_parses(corpus: Path) -> None:
    log = _log(corpus, f"{TPM2_TOOLS_FIXTURES}/specid-vendordata.bin")
    assert log.spec_id is not None
    assert log.spec_id.vendor_info == bytes.fromhex("deadbeef")
    assert len(log.events) == 1
    assert replay(log) == {}


def test_tpm2_tools_uefiaction_drops_banks_without_digests(corpus: Path) -> None:
    """The header declares four banks, the event carries two: only those two replay."""
    log = _log(corpus, f"{TPM2_TOOLS_FIXTURES}/event-uefiaction.bin")
    assert log.banks == ("sha1", "sha256", "sha384", "sha512")
    assert set(replay(log)) == {"sha1", "sha256"}
    with pytest.raises(EventLogError, match="The event log has no sha384 digests"):
        replay(log, ["sha384"])


# --- go-attestation: Verify(PCRs) with the 24 PCRs of the test ----------------------------


def _pcr_map(pcrs: dict[str, dict[str, str]]) -> dict[str, dict[int, bytes]]:
    return {
        bank: {int(p): hex_value(v) for p, v in values.items()} for bank, values in pcrs.items()
    }


@pytest.mark.parametrize(
    "name", [n for n, e in GO_ATTESTATION.items() if "expected_pcrs" in e and "ebs" not in n]
)
def test_go_attestation_logs_verify_against_the_quoted_pcrs(corpus: Path, name: str) -> None:
    entry = GO_ATTESTATION[name]
    log = _log(corpus, go_attestation_log(name))
    pcrs = {b: v for b, v in _pcr_map(entry["expected_pcrs"]).items() if b in log.banks}
    assert pcrs
    assert compare_pcrs(log, pcrs) == []
    assert len(log.events) == entry["num_events_incl_header"]


def test_ebs_event_missing_needs_the_exit_boot_services_workaround(corpus: Path) -> None:
    """Strict replay of PCR 5 does not match; adding the two ExitBootServices EV_EFI_ACTION
    digests (go-attestation's workaround) does (MANIFEST: ebs_event_missing_eventlog)."""
    entry = GO_ATTESTATION["ebs_event_missing_eventlog"]
    log = _log(corpus, go_attestation_log("ebs_event_missing_eventlog"))
    assert log.format == "legacy_sha1"
    pcrs = {"sha1": {5: hex_value(entry["expected_pcrs"]["sha1"]["5"])}}
    [mismatch] = compare_pcrs(log, pcrs)
    assert (mismatch.bank, mismatch.pcr) == ("sha1", 5)
    assert mismatch.actual == pcrs["sha1"][5]
    assert mismatch.expected == replay(log)["sha1"][5]
    assert [e.pcr for e in mismatch.events] == [5] * len(mismatch.events)
    assert compare_pcrs(log, pcrs, ebs_workaround=True) == []
    # The workaround applies to PCR 5 only.
    other = {"sha1": {4: bytes(20)}}
    assert len(compare_pcrs(log, other, ebs_workaround=True)) == 1


@pytest.mark.parametrize(
    ("name", "events"),
    [
        (n, e["num_events_incl_header"])
        for n, e in GO_ATTESTATION.items()
        if "expected_pcrs" not in e
    ],
)
def test_go_attestation_logs_without_pcrs_parse(corpus: Path, name: str, events: int) -> None:
    log = _log(corpus, go_attestation_log(name))
    assert len(log.events) == events
    replay(log)


def test_short_no_action_log_sets_locality_3(corpus: Path) -> None:
    log = _log(corpus, go_attestation_log("short_no_action_eventlog"))
    assert (log.format, len(log.events), log.startup_locality) == ("legacy_sha1", 1, 3)
    assert replay(log) == {}


# --- go-eventlog linux_tpm12, go-tpm-tools GCE attestation, cmc, keylime ---------------------


def test_go_eventlog_linux_tpm12_matches_its_pcrs(corpus: Path) -> None:
    dump = json.loads((corpus / "go-eventlog/testdata/legacydata/linux_tpm12.json").read_text())
    raw = base64.b64decode(dump["Log"]["Raw"])
    assert raw == (corpus / "go-eventlog/derived/linux_tpm12.eventlog.bin").read_bytes()
    log = parse_event_log(raw)
    pcrs = {p["Index"]: base64.b64decode(p["Digest"]) for p in dump["Log"]["PCRs"]}
    assert len(pcrs) == 24
    assert compare_pcrs(log, {"sha1": pcrs}) == []
    # PCR 10 (IMA) is not in the firmware log and is therefore not compared.
    assert 10 not in replay(log)["sha1"]


@pytest.mark.parametrize("vector", ["gce-cos-85-no-nonce", "gce-cos-85-nonce9009"])
def test_gce_attestation_log_reproduces_all_quoted_pcrs(corpus: Path, vector: str) -> None:
    data = json.loads((corpus / f"go-tpm-tools/derived/{vector}.json").read_text())
    log = _log(corpus, f"go-tpm-tools/derived/{vector}.eventlog.bin")
    assert log.size == data["event_log_len"]
    banks = {}
    for quote in data["quotes"]:
        pcrs = quote["pcrs"]
        banks[pcrs["hash"].lower()] = {int(p): hex_value(v) for p, v in pcrs["pcrs"].items()}
    assert set(banks) == {"sha1", "sha256", "sha384"}
    assert compare_pcrs(log, banks) == []


def test_cmc_quote_vector_digests_replay_through_the_writer(corpus: Path) -> None:
    vector = json.loads((corpus / "cmc/derived/quote_vector.json").read_text())
    writer = EventLogWriter(banks=("sha256",))
    for pcr, digests in vector["event_digests_sha256"].items():
        for digest in digests:
            writer.add(
                int(pcr), EventType.EV_POST_CODE, b"", digests={"sha256": bytes.fromhex(digest)}
            )
    replayed = replay(parse_event_log(writer.to_bytes()))["sha256"]
    assert {str(p): v.hex() for p, v in replayed.items()} == vector["pcr_values_sha256"]


def test_cmc_binary_bios_measurements_parses(corpus: Path) -> None:
    log = _log(corpus, "cmc/derived/BinaryBiosMeasurements.bin")
    assert len(log.events) == 128
    assert set(replay(log)) == {"sha1", "sha256"}


def test_keylime_mb_log_parses(corpus: Path) -> None:
    raw = base64.b64decode((corpus / "keylime/test/data/mb_log.b64").read_bytes())
    assert raw == (corpus / "keylime/derived/mb_log.bin").read_bytes()
    log = parse_event_log(raw)
    assert log.format == "crypto_agile"
    assert len(log.events) == 102
    assert set(replay(log)) == {"sha256"}


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        (
            "cmc/derived/InvalidBinaryBiosMeasuremens.bin",
            "Event log: event 0 at offset 0 (0x0): the Spec ID header event must be on PCR 0 "
            "but names PCR 67305985.",
        ),
        (
            "keylime/test/data/create-mb-policy/binary_bios_measurements-bogus",
            "Event log: event 0 at offset 0 (0x0): event data of 1919248394 bytes runs past the "
            "end of the log (2 bytes left).",
        ),
        (
            "keylime/test/data/create-mb-policy/binary_bios_measurements-empty",
            "The event log is empty (0 bytes).",
        ),
    ],
)
def test_invalid_logs_are_rejected(corpus: Path, relative: str, message: str) -> None:
    with pytest.raises(EventLogError) as caught:
        parse_event_log((corpus / relative).read_bytes())
    assert caught.value.message == message
    assert "binary_bios_measurements" in caught.value.remedy
