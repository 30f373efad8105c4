"""A boot that left no TCG event log (REALBOOT obstacle 4: Debian's GRUB ``linux`` command with
Secure Boot off boots the kernel without its EFI stub, and
/sys/kernel/security/tpm0/binary_bios_measurements does not exist), and the platform facts
``tpm info`` reads without the TPM: the kernel's TPM devices and Secure Boot from efivars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _service import hostseal
from hostseal import hostinfo
from hostseal.lab import LabHost
from hostseal.settings import DEFAULT_EVENTLOG
from hostseal.tpm import TpmUnavailable, parse_tcti

SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
NO_LOG = "The firmware left no TCG event log for this boot"
EFI_STUB = "in GRUB use linuxefi and initrdefi instead of linux and initrd"


def tpm_info(host: LabHost, *args: str) -> tuple[int, str, str]:
    done = hostseal("--tcti", host.tcti, "tpm", "info", *args, env={"COLUMNS": "1000"})
    assert "Traceback" not in done.stdout + done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.mark.swtpm
def test_a_missing_log_file_is_a_failed_prerequisite_with_a_remedy(
    lab_host: LabHost, tmp_path: Path
) -> None:
    missing = tmp_path / "binary_bios_measurements"
    code, out, err = tpm_info(lab_host, "--eventlog", str(missing))
    assert code == 1, err
    assert f"Event log                   none (no file at {missing})" in out
    assert f"FAIL No TCG event log for this boot at {missing}: the file does not exist." in out
    assert "What to do: Point --eventlog / HOSTSEAL_EVENTLOG at this boot's log" in out
    assert EFI_STUB in out
    code, out, _ = tpm_info(lab_host, "--eventlog", str(missing), "--json")
    data = json.loads(out)
    assert code == 1
    assert data["eventlog"] == {
        "path": str(missing),
        "present": False,
        "events": None,
        "detail": f"none (no file at {missing})",
    }
    [problem] = [p for p in data["problems"] if p["check"] == "event-log"]
    assert problem["severity"] == "fail"
    assert EFI_STUB in problem["remedy"]


@pytest.mark.swtpm
@pytest.mark.skipif(DEFAULT_EVENTLOG.exists(), reason="this machine's kernel has an event log")
def test_the_kernel_without_a_log_is_named_as_the_firmware_leaving_none(
    lab_host: LabHost,
) -> None:
    """The kernel's own path, absent on this machine as on a real boot through GRUB's linux."""
    code, out, _ = tpm_info(lab_host, "--eventlog", str(DEFAULT_EVENTLOG), "--json")
    data = json.loads(out)
    assert code == 1
    [problem] = [p for p in data["problems"] if p["check"] == "event-log"]
    assert problem["message"].startswith(f"{NO_LOG}: {DEFAULT_EVENTLOG} does not exist.")
    assert problem["remedy"].startswith("Boot the kernel through its EFI stub")
    assert "turn Secure Boot on" in problem["remedy"]
    assert "mount -t securityfs securityfs /sys/kernel/security" in problem["remedy"]


@pytest.mark.swtpm
def test_a_log_present_is_counted(lab_host: LabHost) -> None:
    code, out, _ = tpm_info(lab_host, "--eventlog", str(lab_host.eventlog), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["eventlog"]["present"] is True
    assert data["eventlog"]["events"] > 10
    assert not [p for p in data["problems"] if p["check"] == "event-log"]


def _efivars(tmp_path: Path, value: bytes) -> Path:
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    (efivars / SECURE_BOOT_VAR).write_bytes(value)
    return efivars


@pytest.mark.parametrize(
    ("value", "enabled"), [(b"\x06\0\0\0\x01", True), (b"\x06\0\0\0\0", False)]
)
def test_a_device_tpm_reads_secure_boot_from_efivars_without_an_event_log(
    tmp_path: Path, value: bytes, enabled: bool
) -> None:
    """Secure Boot on a real host comes from efivars, event log or not (REALBOOT: "yes (from
    efivars)"); this machine has no /dev/tpmrm0, so the report is the no-TPM one."""
    tcti = parse_tcti("device:/dev/tpmrm0")
    efivars = _efivars(tmp_path, value)
    missing = TpmUnavailable("No TPM device at /dev/tpmrm0.", "Check the firmware setup.")
    report = hostinfo.without_tpm(tcti, missing, tmp_path / "none", efivars)
    assert report.tcti == "device:/dev/tpmrm0"
    assert report.secure_boot == hostinfo.SecureBoot(enabled, "efivars")
    assert hostinfo.secure_boot_of(tcti, None, efivars) == hostinfo.SecureBoot(enabled, "efivars")


def test_a_software_tpm_does_not_read_this_machines_efivars(tmp_path: Path) -> None:
    efivars = _efivars(tmp_path, b"\x06\0\0\0\x01")
    state = hostinfo.secure_boot_of(parse_tcti("swtpm:port=2321"), None, efivars)
    assert state.enabled is None and state.source == "unknown"


def test_the_kernels_tpm_devices_are_listed(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    assert hostinfo.kernel_devices(dev) == []
    for name in ("tpmrm0", "tpm0", "tty0"):
        (dev / name).touch()
    assert hostinfo.kernel_devices(dev) == [str(dev / "tpm0"), str(dev / "tpmrm0")]
