"""Event data against its digests (hostseal.measure.binding): the rules real firmware follows
(every corpus log verifies with no forged data), forged data in every bank, data no digest
covers shown as unverified, and a fuzz of the rules."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _forge import find, rewrite
from hostseal.attest.errors import PolicyInvalid
from hostseal.attest.policy import capture_policy
from hostseal.cli.main import cli
from hostseal.lab.firmware import DEFAULT_CMDLINE, BootConfig, measure_boot
from hostseal.measure import (
    EFI_GLOBAL_VARIABLE,
    Event,
    EventDataForged,
    EventLog,
    EventLogError,
    EventType,
    binding,
    describe,
    diff_logs,
    efi_variable_data,
    forged_events,
    kernel_cmdline,
    kernel_cmdlines,
    parse_event_log,
    replay,
    secure_boot_state,
    summarize,
)

from ._corpus import CORPUS

SHELL = DEFAULT_CMDLINE + " init=/bin/sh"
FORGED_LABEL = "(FORGED: the event data does not match its measurement)"


def _corpus_logs() -> list[str]:
    found = []
    if not CORPUS.is_dir():
        return found
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.suffix in (".pem", ".der", ".json", ".yaml", ".txt", ".md"):
            continue
        if path.stat().st_size < 40 or path.stat().st_size > 2_000_000:
            continue
        try:
            parse_event_log(path.read_bytes())
        except EventLogError:
            continue
        found.append(str(path.relative_to(CORPUS)))
    return found


CORPUS_LOGS = _corpus_logs()


def _log(corpus: Path, relative: str) -> EventLog:
    return parse_event_log((corpus / relative).read_bytes())


# --- real firmware: no genuine log is "forged" -----------------------------------------------


@pytest.mark.corpus
def test_the_corpus_has_its_event_logs(corpus: Path) -> None:
    assert len(CORPUS_LOGS) >= 35, CORPUS_LOGS


@pytest.mark.corpus
@pytest.mark.parametrize("relative", CORPUS_LOGS)
def test_every_corpus_log_verifies_with_no_forged_data(corpus: Path, relative: str) -> None:
    log = _log(corpus, relative)
    assert forged_events(log.events) == []
    for cmdline in kernel_cmdlines(log):
        assert cmdline.verified, (cmdline.event.index, cmdline.text)
    for event in log.events:
        if event.event_type in (EventType.EV_SEPARATOR, EventType.EV_EFI_ACTION):
            assert binding(event).verified, event.index
        if event.event_type in (
            EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
            EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        ):
            assert binding(event).status == "unverified", event.index
            assert describe(event).endswith(" (unverified)")
        assert "FORGED" not in describe(event)


QUIRKS = {
    # (log, event): the rule real firmware or boot loaders followed
    ("cmc/derived/BinaryBiosMeasurements.bin", 52): "GRUB: H(text after 'grub_cmd: ')",
    ("go-tpm-tools/internal/test/eventlogs/rhel8-uefi.bin", 28): (
        "GRUB (RHEL): H(text after 'grub_cmd ')"
    ),
    ("go-tpm-tools/internal/test/eventlogs/arch-linux-workstation.bin", 24): (
        "systemd-boot: H(UTF-16 text), log record one byte short"
    ),
    ("tpm2-tools/test/integration/fixtures/event-sd-boot-fedora37.bin", 23): (
        "systemd: H(UTF-16 text)"
    ),
    ("cmc/derived/BinaryBiosMeasurements.bin", 21): "H(variable value), as firmware measures it",
    ("go-eventlog/derived/linux_tpm12.eventlog.bin", 6): (
        "H(variable value), as firmware measures it"
    ),
}


@pytest.mark.corpus
@pytest.mark.parametrize(("where", "rule"), QUIRKS.items(), ids=[f"{k[0]}#{k[1]}" for k in QUIRKS])
def test_real_firmware_quirks_verify(corpus: Path, where: tuple[str, int], rule: str) -> None:
    event = _log(corpus, where[0]).events[where[1]]
    result = binding(event)
    assert (result.status, result.rule) == ("verified", rule)


@pytest.mark.corpus
def test_a_boot_variable_hashed_by_value_marks_its_name_unverified(corpus: Path) -> None:
    event = _log(corpus, "cmc/derived/BinaryBiosMeasurements.bin").events[21]
    assert binding(event).partial == "name"
    assert describe(event).endswith(" (name unverified)")


@pytest.mark.corpus
def test_a_real_s_crtm_version_hashed_otherwise_is_unverified_not_forged(corpus: Path) -> None:
    """gdc-host (a physical server): its firmware's S-CRTM version digest is over something
    else (go-tpm-tools rejects the event); a genuine log, so not "forged"."""
    event = _log(corpus, "go-tpm-tools/internal/test/eventlogs/gdc-host.bin").events[3]
    assert binding(event).status == "unverified"


# --- forged data: every bank ----------------------------------------------------------------


def _boot(banks: tuple[str, ...], **changes: object) -> bytes:
    return measure_boot(BootConfig().with_changes(**changes), banks)[0]


BANKS = [("sha256",), ("sha1", "sha256"), ("sha1", "sha256", "sha384")]


# (banks, the bank whose digest the attacker also rewrites to match the forged text)
REWRITES = [(banks, None) for banks in BANKS] + [
    (("sha1", "sha256"), "sha1"),
    (("sha1", "sha256", "sha384"), "sha1"),
    (("sha1", "sha256", "sha384"), "sha384"),
]


@pytest.mark.parametrize(
    ("banks", "matched"), REWRITES, ids=[f"{'+'.join(b)}-rewrites-{m}" for b, m in REWRITES]
)
def test_a_forged_command_line_is_forged_whichever_bank_the_attacker_rewrites(
    banks: tuple[str, ...], matched: str | None
) -> None:
    genuine = _boot(banks, kernel_cmdline=SHELL)
    index = find(genuine, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    match = {matched: DEFAULT_CMDLINE.encode()} if matched else None
    raw = rewrite(
        genuine, index, b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b"\0", match=match
    )
    log = parse_event_log(raw)
    assert binding(log.events[index]).status == "forged"
    assert forged_events(log.events) == [log.events[index]]
    with pytest.raises(EventDataForged) as caught:
        kernel_cmdline(log)
    assert caught.value.message == (
        f"The event data of PCR 8 event {index} (EV_IPL, kernel command line) does not match "
        "its measurement."
    )
    assert "investigate the host, then reboot it" in caught.value.remedy
    assert describe(log.events[index]) == f"kernel_cmdline: {DEFAULT_CMDLINE} {FORGED_LABEL}"
    assert summarize(log)["kernel_cmdline_status"] == "forged"
    assert summarize(log)["kernel_cmdline"] is None


def test_the_genuine_command_line_verifies_in_every_bank() -> None:
    for banks in BANKS:
        log = parse_event_log(_boot(banks, kernel_cmdline=SHELL))
        assert kernel_cmdline(log) == SHELL
        assert summarize(log)["kernel_cmdline_status"] == "verified"


@pytest.mark.parametrize("banks", BANKS, ids=["+".join(b) for b in BANKS])
def test_a_forged_secure_boot_value_is_refused(banks: tuple[str, ...]) -> None:
    genuine = _boot(banks, secure_boot=False)
    index = find(
        genuine, 7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot".encode("utf-16-le")
    )
    on = efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    log = parse_event_log(
        rewrite(genuine, index, on, match={"sha1": on} if "sha1" in banks else None)
    )
    with pytest.raises(EventDataForged, match="SecureBoot variable"):
        secure_boot_state(log)
    assert describe(log.events[index]) == f"SecureBoot = enabled {FORGED_LABEL}"
    assert summarize(log)["secure_boot"] is None


def test_an_action_string_and_a_separator_are_bound() -> None:
    genuine = _boot(("sha1", "sha256"))
    action = find(genuine, 4, EventType.EV_EFI_ACTION)
    separator = find(genuine, 0, EventType.EV_SEPARATOR)
    raw = rewrite(genuine, action, b"Calling EFI Application from Boot Option (trusted)")
    raw = rewrite(raw, separator, b"\x01\0\0\0")
    log = parse_event_log(raw)
    assert [e.index for e in forged_events(log.events)] == sorted([action, separator])


def test_an_image_path_and_a_firmware_blob_are_unverified() -> None:
    log = parse_event_log(_boot(("sha1", "sha256")))
    app = log.events[find(_boot(("sha1", "sha256")), 4, EventType.EV_EFI_BOOT_SERVICES_APPLICATION)]
    blob = log.events[find(_boot(("sha1", "sha256")), 0, EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB)]
    for event in (app, blob):
        assert binding(event).status == "unverified"
        assert binding(event).rule == "the digest is not over the event data"
    assert summarize(log)["boot_applications"][0]["path_verified"] is False


def test_a_diff_marks_forged_and_unverified_data() -> None:
    banks = ("sha1", "sha256")
    before = parse_event_log(_boot(banks))
    genuine = _boot(banks, kernel_cmdline=SHELL, shim="shim-16.0")
    index = find(genuine, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    after = parse_event_log(
        rewrite(genuine, index, b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b"\0")
    )
    messages = [c.message for c in diff_logs(before, after)]
    assert (
        f"PCR 8: kernel command line changed from '{DEFAULT_CMDLINE}' to '{DEFAULT_CMDLINE}' "
        f"{FORGED_LABEL}"
    ) in messages
    assert (
        "PCR 4: boot application \\EFI\\debian\\shimx64.efi (path unverified) changed digest"
        in (messages)
    )


def test_a_policy_is_not_captured_from_a_forged_log() -> None:
    genuine = _boot(("sha1", "sha256"), kernel_cmdline=SHELL)
    index = find(genuine, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    log = parse_event_log(
        rewrite(genuine, index, b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b"\0")
    )
    with pytest.raises(PolicyInvalid) as caught:
        capture_policy("from-forged", log, replay(log))
    assert caught.value.message.startswith(
        f"Cannot capture a policy: The event data of PCR 8 event {index} (EV_IPL) does not "
        "match its measurement"
    )


def test_eventlog_show_marks_forged_and_unverified_events(tmp_path: Path) -> None:
    genuine = _boot(("sha1", "sha256"), kernel_cmdline=SHELL)
    index = find(genuine, 8, EventType.EV_IPL, b"kernel_cmdline: ")
    path = tmp_path / "forged.bin"
    path.write_bytes(
        rewrite(genuine, index, b"kernel_cmdline: " + DEFAULT_CMDLINE.encode() + b"\0")
    )
    runner = CliRunner(env={"COLUMNS": "400"})
    shown = runner.invoke(cli, ["eventlog", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert FORGED_LABEL in shown.stdout
    assert "shimx64.efi (950000 bytes) (unverified)" in shown.stdout
    as_json = runner.invoke(cli, ["eventlog", "show", "--json", str(path)])
    statuses = {
        e["index"]: e["data_status"] for e in __import__("json").loads(as_json.stdout)["events"]
    }
    assert statuses[index] == "forged"
    summary = runner.invoke(cli, ["eventlog", "summary", str(path)])
    assert (
        "Kernel command line: FORGED: the event data does not match its measurement"
        in summary.stdout
    )
    assert "Boot application (PCR 4): \\EFI\\debian\\shimx64.efi (path unverified)" in (
        summary.stdout
    )


# --- the rules, fuzzed ------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = st.sampled_from([int(t) for t in EventType] + [0x12345678])
BANK_NAMES = st.lists(
    st.sampled_from(["sha1", "sha256", "sha384", "sm3_256"]), min_size=1, max_size=3, unique=True
)


def _event(pcr: int, event_type: int, data: bytes, digests: dict[str, bytes]) -> Event:
    return Event(1, 0, pcr, event_type, digests, data)


@pytest.mark.fuzz
@FUZZ
@given(
    st.integers(0, 23),
    TYPES,
    st.binary(max_size=300),
    BANK_NAMES,
    st.binary(min_size=1, max_size=64),
)
def test_binding_never_raises_and_is_consistent(
    pcr: int, event_type: int, data: bytes, banks: list[str], other: bytes
) -> None:
    digests = {b: hashlib.new(b, other).digest() for b in banks if b != "sm3_256"}
    digests.setdefault("sm3_256", bytes(32)) if "sm3_256" in banks else None
    event = _event(pcr, event_type, data, digests)
    result = binding(event)
    assert result.status in ("verified", "unverified", "forged")
    assert binding(event) is result  # cached
    assert describe(event)
    if event_type == EventType.EV_NO_ACTION:
        assert result.status == "unverified"


@pytest.mark.fuzz
@FUZZ
@given(
    st.sampled_from(
        [EventType.EV_SEPARATOR, EventType.EV_EFI_ACTION, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG]
    ),
    st.binary(max_size=200),
    st.binary(min_size=1, max_size=200),
    st.lists(st.sampled_from(["sha1", "sha256", "sha384"]), min_size=1, max_size=3, unique=True),
)
def test_bound_types_verify_their_data_and_catch_any_change(
    event_type: EventType, data: bytes, forged: bytes, banks: list[str]
) -> None:
    digests = {b: hashlib.new(b, data).digest() for b in banks}
    assert binding(_event(7, event_type, data, digests)).verified
    if forged != data:
        result = binding(_event(7, event_type, forged, digests))
        # a variable's value-only rule could match only if the forged value hashes to the
        # digest; H(data) of other bytes never does
        assert result.status == "forged"


@pytest.mark.fuzz
@FUZZ
@given(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=120),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=120),
    st.booleans(),
)
def test_grub_command_lines_verify_and_rewrites_are_caught(
    measured: str, shown: str, nul: bool
) -> None:
    text = measured.encode()
    data = b"kernel_cmdline: " + text + (b"\0" if nul else b"")
    digests = {b: hashlib.new(b, text).digest() for b in ("sha1", "sha256")}
    assert binding(_event(8, EventType.EV_IPL, data, digests)).verified
    forged_text = shown.encode()
    if forged_text.rstrip(b"\0") != text.rstrip(b"\0") and forged_text != text + b"\0":
        forged = b"kernel_cmdline: " + forged_text + b"\0"
        assert binding(_event(8, EventType.EV_IPL, forged, digests)).status == "forged"


def test_a_variable_header_claiming_more_than_its_data_is_handled() -> None:
    data = EFI_GLOBAL_VARIABLE.bytes_le + struct.pack("<QQ", 2**60, 2**60) + b"x"
    digests = {"sha256": hashlib.sha256(b"x").digest()}
    assert binding(_event(1, EventType.EV_EFI_VARIABLE_BOOT, data, digests)).status == "forged"


def test_the_doctor_reads_no_secure_boot_state_from_a_forged_log(tmp_path: Path) -> None:
    """``hostseal doctor`` on a lab host reads Secure Boot from the event log."""
    from hostseal.hostinfo import secure_boot_from_eventlog

    genuine = _boot(("sha1", "sha256"), secure_boot=False)
    index = find(
        genuine, 7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot".encode("utf-16-le")
    )
    path = tmp_path / "eventlog.bin"
    path.write_bytes(
        rewrite(genuine, index, efi_variable_data(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"))
    )
    found = secure_boot_from_eventlog(path)
    assert found.enabled is None
    assert "does not match its measurement" in found.detail
