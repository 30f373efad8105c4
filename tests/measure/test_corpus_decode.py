"""Decoding real logs: Secure Boot, databases, boot applications, command lines, firmware."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hostseal.measure import (
    EventLog,
    EventLogError,
    authorities,
    boot_applications,
    data_verified,
    decode_image_load,
    describe,
    efi_actions,
    firmware_blobs,
    kernel_cmdline,
    parse_event_log,
    replay,
    scrtm_version,
    secure_boot_databases,
    secure_boot_state,
    separators,
    summarize,
)

from ._corpus import GO_ATTESTATION_DATA, GO_TPM_TOOLS, TPM2_TOOLS_FIXTURES

pytestmark = pytest.mark.corpus

GTT = "go-tpm-tools/internal/test/eventlogs"
YAML_LOGS = [
    "event-arch-linux.bin",
    "event-bootorder.bin",
    "event-gce-ubuntu-2104-log.bin",
    "event-moklisttrusted.bin",
    "event-postcode.bin",
    "event-sd-boot-fedora37.bin",
]


def _log(corpus: Path, relative: str) -> EventLog:
    return parse_event_log((corpus / relative).read_bytes())


def _yaml_events(corpus: Path, name: str) -> list[dict[str, Any]]:
    text = (corpus / TPM2_TOOLS_FIXTURES / "event-pretty" / f"{name}.yaml").read_text()
    events: list[dict[str, Any]] = yaml.safe_load(text)["events"]
    return events


# --- Secure Boot state as the sources state it -----------------------------------------------

SECURE_BOOT = {
    # go-tpm-tools (server/eventlog_test.go comments; COS85's comment is a copy of Ubuntu's, so
    # the COS logs are not listed from it)
    f"{GTT}/rhel8-uefi.bin": True,  # "with Secure Boot enabled"
    f"{GTT}/debian-10.bin": True,  # "with Secure Boot enabled" (legacy SHA-1 log)
    f"{GTT}/ubuntu-2104-no-dbx.bin": False,  # "Secure Boot disabled"
    f"{GTT}/ubuntu-2104-no-secure-boot.bin": False,
    f"{GTT}/ubuntu-2404-amd-sevsnp.bin": False,
    f"{GTT}/glinux-alex.bin": False,  # "secure boot disabled"
    # keylime test/test_create_mb_policy.py
    "keylime/test/data/create-mb-policy/binary_bios_measurements": False,
    "keylime/test/data/create-mb-policy/binary_bios_measurements-secureboot": True,
    # go-attestation: windows_gcp_shielded_vm.json Enabled == true; the two "no_secure_boot" logs
    "go-attestation/derived_windows_gcp_shielded_vm.eventlog.bin": True,
    f"{GO_ATTESTATION_DATA}/ubuntu_2104_shielded_vm_no_secure_boot_eventlog": False,
    f"{GO_ATTESTATION_DATA}/coreos_36_shielded_vm_no_secure_boot_eventlog": False,
    # go-attestation sb_cert_eventlog / option_rom_eventlog: Secure Boot authorities are logged
    f"{GO_ATTESTATION_DATA}/sb_cert_eventlog": True,
    f"{GO_ATTESTATION_DATA}/option_rom_eventlog": True,
}


@pytest.mark.parametrize(("relative", "enabled"), SECURE_BOOT.items())
def test_secure_boot_state_is_what_the_source_states(
    corpus: Path, relative: str, enabled: bool
) -> None:
    log = _log(corpus, relative)
    assert secure_boot_state(log) is enabled
    assert summarize(log)["secure_boot"] is enabled


@pytest.mark.parametrize(
    "relative",
    [
        f"{GTT}/arch-linux-workstation.bin",  # go-tpm-tools: "SecureBoot data len is 0, expected 1"
        f"{GO_ATTESTATION_DATA}/crypto_agile_eventlog",
    ],
)
def test_empty_secure_boot_variable_is_a_secure_boot_parse_error(
    corpus: Path, relative: str
) -> None:
    """The log replays (see test_corpus_replay); only reading Secure Boot fails, as in
    go-tpm-tools and go-attestation. go-eventlog's AllowEmptySBVar reads it as off."""
    log = _log(corpus, relative)
    replay(log)
    with pytest.raises(EventLogError) as caught:
        secure_boot_state(log)
    assert caught.value.message.endswith(
        "the SecureBoot variable is logged with 0 bytes of data, expected 1, so the Secure Boot "
        "state cannot be read from this log."
    )
    assert secure_boot_state(log, allow_empty=True) is False


def test_gdc_host_scrtm_version_is_rejected_not_its_replay(corpus: Path) -> None:
    """go-tpm-tools expects "invalid SCRTM version event for PCR0" for gdc-host: the S-CRTM
    version's digest is not H(data). Its PCRs still replay (test_corpus_replay)."""
    log = _log(corpus, f"{GTT}/gdc-host.bin")
    with pytest.raises(EventLogError) as caught:
        scrtm_version(log)
    assert caught.value.message == (
        "Event log: event 3 at offset 209 (0xd1): the S-CRTM version event's data does not "
        "match its digest."
    )
    assert caught.value.event_index == 3
    assert "(data does not match its digest)" in describe(log.events[3])
    assert log.startup_locality == 3
    summary = summarize(log)
    assert summary["firmware_version"] is None
    assert summary["warnings"] == [f"S-CRTM version: {caught.value.message}"]


@pytest.mark.parametrize(
    ("relative", "version"),
    [
        (f"{GTT}/rhel8-uefi.bin", "GCE Virtual Firmware v1"),
        (f"{GTT}/ubuntu-2404-amd-sevsnp.bin", "GCE Virtual Firmware v2"),
        (f"{GTT}/arch-linux-workstation.bin", "546bfb1e-1d0c-4055-a4ad-4ef4bf17b83a"),
        (
            "keylime/test/data/create-mb-policy/binary_bios_measurements-secureboot",
            "edk2-20240524-7.el9",
        ),
    ],
)
def test_scrtm_version(corpus: Path, relative: str, version: str) -> None:
    assert scrtm_version(_log(corpus, relative)) == version


def test_secure_boot_databases_of_ubuntu_1804_hold_the_stated_certificates(corpus: Path) -> None:
    """go-tpm-tools TestParseSecureBootState: db holds MS Windows PCA 2011 and MS 3rd-party UEFI
    CA 2011 (no hashes), PK is the GCE default PK, KEK is MS KEK CA 2011."""
    certs = corpus / "go-tpm-tools/server/secure-boot"
    databases = secure_boot_databases(_log(corpus, f"{GTT}/ubuntu-1804-amd-sev.bin"))
    assert set(databases) == {"PK", "KEK", "db", "dbx"}
    db = databases["db"]
    assert db.hashes == 0
    assert {e.data for e in db.entries} == {
        (certs / "MicWinProPCA2011_2011-10-19.crt").read_bytes(),
        (certs / "MicCorUEFCA2011_2011-06-27.crt").read_bytes(),
    }
    assert [e.data for e in databases["PK"].entries] == [(certs / "GcePk.crt").read_bytes()]
    assert [e.data for e in databases["KEK"].entries] == [
        (certs / "MicCorKEKCA2011_2011-06-24.crt").read_bytes()
    ]
    assert databases["dbx"].describe() == "dbx: 0 certificates, 77 hashes"


@pytest.mark.parametrize(("name", "count"), [("sb_cert_eventlog", 3), ("option_rom_eventlog", 2)])
def test_post_separator_authorities(corpus: Path, name: str, count: int) -> None:
    """go-attestation: len(PostSeparatorAuthority) is 3 and 2."""
    found = authorities(_log(corpus, f"{GO_ATTESTATION_DATA}/{name}"))
    assert sum(a.after_separator for a in found) == count


def test_separators_of_a_real_log(corpus: Path) -> None:
    found = separators(_log(corpus, f"{GTT}/rhel8-uefi.bin"))
    assert sorted(s.event.pcr for s in found) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert not any(s.error for s in found)
    assert all(s.verified for s in found)


# --- boot applications ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bank"),
    [(n, b) for n, e in GO_TPM_TOOLS.items() for b in e.get("expected_efi_app_digests", {})],
)
def test_boot_application_digests_are_the_stated_ones(corpus: Path, name: str, bank: str) -> None:
    entry = GO_TPM_TOOLS[name]
    log = _log(corpus, "go-tpm-tools/" + entry["file"])
    digests = [a.digests[bank].hex() for a in boot_applications(log) if a.event.pcr == 4]
    expected = entry["expected_efi_app_digests"][bank]
    if name == "GdcHost":
        # The source's GdcHost entry repeats COS101's list (TestParseEfiState does not use it);
        # none of those digests is in gdc-host.bin.
        assert expected == GO_TPM_TOOLS["COS101AmdSev"]["expected_efi_app_digests"][bank]
        raw = (corpus / "go-tpm-tools" / entry["file"]).read_bytes()
        assert not any(bytes.fromhex(d) in raw for d in expected)
        assert len(digests) == 3
    else:
        assert digests == expected


@pytest.mark.parametrize("name", [n for n in YAML_LOGS if "fedora37" not in n])  # no images
def test_image_device_paths_are_tpm2_eventlogs(corpus: Path, name: str) -> None:
    """Device paths as UEFI text, compared with tpm2_eventlog's (libefivar) rendering; IPv4 nodes
    are left out (libefivar prints them without separators)."""
    log = _log(corpus, f"{TPM2_TOOLS_FIXTURES}/{name}")
    compared = 0
    for item in _yaml_events(corpus, name):
        if item["EventType"] not in (
            "EV_EFI_BOOT_SERVICES_APPLICATION",
            "EV_EFI_BOOT_SERVICES_DRIVER",
            "EV_EFI_RUNTIME_SERVICES_DRIVER",
        ) or not isinstance(item["Event"], dict):
            continue
        expected = item["Event"]["DevicePath"]
        if "IPv4(" in expected:
            continue
        text = describe(log.events[item["EventNum"]])
        file_path = re.search(r"File\((.*)\)$", expected)
        assert text.startswith(file_path.group(1) if file_path else expected)
        assert decode_image_load(log.events[item["EventNum"]].data).device_path == expected
        compared += 1
    assert compared


def test_boot_application_paths(corpus: Path) -> None:
    apps = boot_applications(_log(corpus, f"{GTT}/ubuntu-2104-no-dbx.bin"))
    assert [a.path for a in apps] == [r"\EFI\ubuntu\shimx64.efi", r"\EFI\ubuntu\grubx64.efi"]
    assert apps[0].device_path == (
        r"PciRoot(0x0)/Pci(0x3,0x0)/SCSI(1,0)/HD(15,GPT,6ea6f740-25ef-4269-838d-1a6f21ebf27f,"
        r"0x2800,0x35000)/File(\EFI\ubuntu\shimx64.efi)"
    )
    assert apps[0].image_length == 955072


# --- kernel command line -------------------------------------------------------------------


@pytest.mark.parametrize("name", YAML_LOGS)
def test_kernel_cmdline_is_the_one_tpm2_eventlog_shows(corpus: Path, name: str) -> None:
    expected = None
    for item in _yaml_events(corpus, name):
        event = item.get("Event")
        if item["EventType"] != "EV_IPL" or not isinstance(event, dict):
            continue
        text = event.get("String", "")
        if item["PCRIndex"] == 8 and text.startswith("kernel_cmdline: "):
            expected = text[len("kernel_cmdline: ") :].rstrip("\0")
        elif item["PCRIndex"] in (8, 12) and "\0" in text[:2]:  # UTF-16 (systemd)
            raw = text.encode("latin-1")  # systemd-boot logged 365 bytes: drop the odd one
            expected = raw[: len(raw) // 2 * 2].decode("utf-16-le").split("\0")[0]
    assert kernel_cmdline(_log(corpus, f"{TPM2_TOOLS_FIXTURES}/{name}")) == expected
    if name == "event-sd-boot-fedora37.bin":
        assert expected == " console=ttyS0 console=tty0 efi=debug "
    if name == "event-arch-linux.bin":
        assert expected is not None and expected.startswith(r"initrd=\intel-ucode.img ")


@pytest.mark.parametrize("log_name", ["cos-85-amd-sev", "cos-93-amd-sev", "cos-101-amd-sev"])
def test_cos_kernel_cmdline(corpus: Path, log_name: str) -> None:
    """go-tpm-tools TestParseLinuxKernelState (expected strings are in its test_data.go, which
    the corpus does not carry): the GRUB kernel_cmdline event, without the prefix and NUL."""
    cmdline = kernel_cmdline(_log(corpus, f"{GTT}/{log_name}.bin"))
    assert cmdline is not None
    assert cmdline.startswith("/syslinux/vmlinuz.A init=/usr/lib/systemd/systemd ")
    assert cmdline.endswith('"') and "\0" not in cmdline


def test_kernel_cmdline_of_ubuntu_2404(corpus: Path) -> None:
    assert kernel_cmdline(_log(corpus, f"{GTT}/ubuntu-2404-amd-sevsnp.bin")) == (
        "/vmlinuz-6.8.0-1010-gcp root=PARTUUID=8270f3c9-b4e4-4345-80ee-5a62db7ebf3f ro "
        "console=ttyS0,115200 panic=-1"
    )


# --- firmware, descriptions, summary ------------------------------------------------------


def test_firmware_blob_of_event_bin(corpus: Path) -> None:
    [blob] = firmware_blobs(_log(corpus, f"{TPM2_TOOLS_FIXTURES}/event.bin"))
    assert (blob.base, blob.length, blob.description) == (0x900000, 0xB00000, "")


@pytest.mark.parametrize(
    "relative",
    [f"{GTT}/{e['file'].rsplit('/', 1)[1]}" for e in GO_TPM_TOOLS.values()]
    + [f"{TPM2_TOOLS_FIXTURES}/{name}" for name in YAML_LOGS],
)
def test_every_event_of_every_log_is_described(corpus: Path, relative: str) -> None:
    log = _log(corpus, relative)
    for event in log.events:
        text = describe(event)
        assert text and "<malformed" not in text


def test_summary_of_a_real_log(corpus: Path) -> None:
    summary = summarize(_log(corpus, f"{GTT}/rhel8-uefi.bin"))
    assert summary["secure_boot"] is True
    assert summary["events"] == 83
    assert summary["banks"] == ["sha1", "sha256", "sha384"]
    assert summary["boot_applications"][0] == {
        "pcr": 4,
        "path": r"\EFI\redhat\shimx64.efi",
        "path_verified": False,
        "sha256": GO_TPM_TOOLS["Rhel8GCE"]["expected_efi_app_digests"]["sha256"][0],
    }
    assert (
        summary["pcrs"]["sha256"]["7"] == GO_TPM_TOOLS["Rhel8GCE"]["expected_pcrs"]["sha256"]["7"]
    )
    assert summary["secure_boot_databases"]["db"] == {"certificates": 2, "hashes": 0}
    assert summary["warnings"] == []


def test_arch_linux_event_24_digest_is_not_its_data(corpus: Path) -> None:
    """tpm2-tools warns "Event 24's digest does not match its payload" (event-arch-linux.bin.warn):
    old systemd-boot measured the command line, not the UTF-16 text it logged."""
    warning = (corpus / TPM2_TOOLS_FIXTURES / "event-arch-linux.bin.warn").read_text()
    assert "Event 24's digest does not match its payload" in warning
    log = _log(corpus, f"{TPM2_TOOLS_FIXTURES}/event-arch-linux.bin")
    assert data_verified(log.events[24]) is False
    assert data_verified(log.events[8]) is True  # a separator


def test_efi_actions(corpus: Path) -> None:
    log = _log(corpus, f"{TPM2_TOOLS_FIXTURES}/event-sd-boot-fedora37.bin")
    assert [(e.pcr, text) for e, text in efi_actions(log)] == [
        (4, "Calling EFI Application from Boot Option"),
        (5, "Exit Boot Services Invocation"),
        (5, "Exit Boot Services Returned with Success"),
    ]
