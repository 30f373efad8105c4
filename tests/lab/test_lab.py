"""Lab hosts: boots measured into swtpm agree with an independent reader (tpm2_pcrread)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from _service import hostseal
from hostseal import lab
from hostseal.lab import BootConfig, LabError, LabHost
from hostseal.measure import parse_event_log, replay, secure_boot_state

pytestmark = pytest.mark.swtpm


def tpm2_pcrread(tcti: str, bank: str) -> dict[int, bytes]:
    """PCRs as tpm2-tools reads them: an independent check of what hostseal wrote."""
    out = subprocess.run(
        ["tpm2_pcrread", bank],
        env={"TPM2TOOLS_TCTI": tcti, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    values = yaml.safe_load(out)[bank]
    return {int(k): int(v).to_bytes(20 if bank == "sha1" else 32, "big") for k, v in values.items()}


def assert_log_matches_tpm(host: LabHost) -> dict[str, dict[int, bytes]]:
    replayed = replay(parse_event_log(host.eventlog.read_bytes()))
    assert set(replayed) == {"sha1", "sha256"}
    for bank, pcrs in replayed.items():
        read = tpm2_pcrread(host.tcti, bank)
        assert pcrs, bank
        for pcr, value in pcrs.items():
            assert read[pcr] == value, f"{bank} PCR {pcr}"
    return replayed


BOOTS = {
    "secure boot on": BootConfig(),
    "secure boot off": BootConfig(secure_boot=False),
    "other kernel and cmdline": BootConfig(kernel="vmlinuz-6.9", kernel_cmdline="ro ima=on"),
}


@pytest.mark.parametrize("boot", BOOTS.values(), ids=BOOTS.keys())
def test_boot_agrees_with_tpm2_pcrread(lab_dir: Path, boot: BootConfig) -> None:
    host = lab.start(lab_dir, "h", boot=boot)
    replayed = assert_log_matches_tpm(host)
    assert set(replayed["sha256"]) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
    assert secure_boot_state(parse_event_log(host.eventlog.read_bytes())) is boot.secure_boot


def test_reboot_resets_pcrs_and_measures_the_new_boot(lab_dir: Path, lab_host: LabHost) -> None:
    first = assert_log_matches_tpm(lab_host)
    again = lab.reboot(lab_dir, "host1")
    assert assert_log_matches_tpm(again) == first  # same boot, same PCRs: they were reset
    off = lab.reboot(lab_dir, "host1", lab_host.boot.with_changes(secure_boot=False))
    changed = assert_log_matches_tpm(off)
    assert changed["sha256"][7] != first["sha256"][7]
    assert changed["sha256"][4] == first["sha256"][4]
    assert off.boots == 3
    assert lab.load(lab_dir, "host1").boot.secure_boot is False


def test_replace_and_clear_keep_measuring(lab_dir: Path, lab_host: LabHost) -> None:
    assert_log_matches_tpm(lab.replace_tpm(lab_dir, "host1"))
    assert_log_matches_tpm(lab.clear_tpm(lab_dir, "host1"))


def test_list_stop_start_destroy(lab_dir: Path, lab_host: LabHost) -> None:
    [listed] = lab.list_hosts(lab_dir)
    assert listed.name == "host1" and listed.running
    with pytest.raises(LabError) as err:
        lab.start(lab_dir, "host1")
    assert err.value.message == "Lab host 'host1' is already running."
    lab.stop(lab_dir, "host1")
    assert not lab.load(lab_dir, "host1").running
    restarted = lab.start(lab_dir, "host1")
    assert_log_matches_tpm(restarted)
    lab.destroy(lab_dir, "host1")
    assert lab.list_hosts(lab_dir) == []


def test_unknown_and_bad_names(lab_dir: Path) -> None:
    with pytest.raises(LabError) as err:
        lab.load(lab_dir, "ghost")
    assert "There is no lab host 'ghost'" in err.value.message
    assert err.value.remedy == "Start one with: hostseal lab start ghost"
    with pytest.raises(LabError) as err:
        lab.start(lab_dir, "../escape")
    assert "is not a valid lab host name" in err.value.message


def test_cli_env_and_json(
    lab_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hostseal.cli.main import main

    monkeypatch.setenv("HOSTSEAL_LAB_DIR", str(lab_dir))

    def run(*args: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        assert done.value.code == 0, err
        return out

    started = json.loads(run("lab", "start", "cli1", "--secure-boot", "off", "--json"))
    assert started["boot"]["secure_boot"] is False and started["running"] is True
    env = run("lab", "env", "cli1")
    assert f"export HOSTSEAL_TCTI={started['tcti']}" in env
    assert f"export HOSTSEAL_EVENTLOG={started['eventlog']}" in env
    rebooted = json.loads(
        run(
            "lab", "reboot", "cli1", "--secure-boot", "on", "--kernel-cmdline", "ro quiet", "--json"
        )
    )
    assert rebooted["boot"]["secure_boot"] is True
    assert rebooted["boot"]["kernel_cmdline"] == "ro quiet"
    assert json.loads(run("lab", "list", "--json"))[0]["name"] == "cli1"
    assert json.loads(run("lab", "replace-tpm", "cli1", "--json"))["tpm_generation"] == 2
    assert json.loads(run("lab", "clear-tpm", "cli1", "--json"))["boots"] == 4
    assert "Lab host cli1 removed." in run("lab", "stop", "cli1", "--remove")


def test_unknown_pcr_bank_is_refused_before_swtpm_starts(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    done = hostseal(
        "lab", "start", "h1", "--pcr-banks", "sha256,sha999", env={"HOSTSEAL_LAB_DIR": str(lab_dir)}
    )
    assert done.returncode == 2
    assert "Invalid value for '--pcr-banks': unknown PCR bank 'sha999'" in done.stderr
    assert "a lab TPM has sha1, sha256, sha384 or sha512 (comma-separated)" in done.stderr
    assert not (lab_dir / "h1").exists()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert str(tmp_path) not in cmdline.read_text()
        except OSError:
            continue
    with pytest.raises(LabError, match="Unknown PCR bank 'sha999'"):
        lab.start(lab_dir, "h2", banks=("sha999",))
    assert not (lab_dir / "h2").exists()
