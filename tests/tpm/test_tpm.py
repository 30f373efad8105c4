"""The TPM layer against real software TPMs (lab hosts)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from _service import hostseal
from hostseal import lab
from hostseal.cli.main import main
from hostseal.lab import LabHost
from hostseal.tpm import TpmLockout, TpmUnavailable, open_tpm
from hostseal.tpm.seal import PolicyNotSatisfied, SealedObjectWrongTpm, seal, unseal

pytestmark = pytest.mark.swtpm


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_info_json_reports_swtpm(lab_host: LabHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["--tcti", lab_host.tcti, "tpm", "info", "--json", "--eventlog", str(lab_host.eventlog)],
        capsys,
    )
    info = json.loads(out)
    assert code == 0
    assert info["version"] == "2.0"
    assert info["manufacturer"] == {"id": "IBM", "name": "IBM software TPM (swtpm)"}
    assert info["kind"] == "virtual"
    assert info["sha256_active"] is True
    assert info["active_banks"] == ["sha1", "sha256"]
    assert info["secure_boot"] == {
        "enabled": True,
        "source": "eventlog",
        "detail": str(lab_host.eventlog),
    }
    assert info["drtm"] == {"launched": False}
    assert info["problems"] == []


def test_info_human_output(lab_host: LabHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["--tcti", lab_host.tcti, "tpm", "info", "--eventlog", str(lab_host.eventlog)], capsys
    )
    assert code == 0
    assert "IBM software TPM (swtpm)" in out
    assert "SHA-256 bank active" in out


def test_sha1_only_tpm_fails_with_remedy(lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = lab.start(lab_dir, "sha1only", banks=("sha1",))
    code, out, _ = run_cli(
        ["--tcti", host.tcti, "tpm", "info", "--json", "--eventlog", str(host.eventlog)], capsys
    )
    info = json.loads(out)
    assert code == 1
    assert info["sha256_active"] is False
    [problem] = [p for p in info["problems"] if p["check"] == "sha256-bank"]
    assert problem["message"] == "SHA-256 PCR bank not active (active banks: sha1)."
    assert problem["remedy"].startswith("Select SHA-256 as the TPM hash algorithm")


def test_secure_boot_off_is_a_problem(lab_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = lab.start(lab_dir, "nosb", boot=lab.BootConfig(secure_boot=False))
    code, out, _ = run_cli(
        ["--tcti", host.tcti, "tpm", "info", "--json", "--eventlog", str(host.eventlog)], capsys
    )
    info = json.loads(out)
    assert code == 1
    assert info["secure_boot"]["enabled"] is False
    assert [p["check"] for p in info["problems"]] == ["secure-boot"]


@pytest.mark.parametrize("as_json", [False, True])
def test_no_tpm_is_reported_as_a_failed_prerequisite(as_json: bool, tmp_path: Path) -> None:
    """As ``esxcli hardware trustedboot get``: "TPM present: no" and what to do, exit code 1."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tcti = f"swtpm:host=127.0.0.1,port={port}"
    done = hostseal(
        "--tcti", f"swtpm:port={port}", "tpm", "info", "--eventlog", str(tmp_path / "none"),
        *(["--json"] if as_json else []), env={"COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    if as_json:
        data = json.loads(done.stdout)
        assert data["present"] is False
        assert data["tcti"] == tcti
        assert data["version"] is None and data["pcr_banks"] == {}
        [tpm, secure_boot] = data["problems"]
        assert tpm["check"] == "tpm-present" and tpm["severity"] == "fail"
        assert tpm["message"].startswith(f"No TPM answered at {tcti} ")
        assert "Check that swtpm is running" in tpm["remedy"]
        assert secure_boot["check"] == "secure-boot" and secure_boot["severity"] == "warn"
    else:
        out = done.stdout
        assert "TPM present  no" in out
        assert f"TCTI         {tcti}" in out
        assert f"FAIL No TPM answered at {tcti} " in out
        assert "What to do: Check that swtpm is running" in out
        assert "Error:" not in done.stderr


def test_missing_device_is_reported_as_no_tpm() -> None:
    args = ("--tcti", "device:/dev/nonexistent", "tpm", "info")
    done = hostseal(*args, env={"COLUMNS": "200"})
    assert done.returncode == 1, done.stderr
    assert "TPM present  no" in done.stdout
    assert "FAIL No TPM device at /dev/nonexistent." in done.stdout
    assert "What to do: Check that the host has a TPM 2.0 enabled in the firmware setup" in (
        done.stdout
    )
    as_json = hostseal(*args, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["present"] is False
    assert json.loads(as_json.stdout)["problems"][0]["message"] == (
        "No TPM device at /dev/nonexistent."
    )


def test_pcr_read_extend(lab_host: LabHost) -> None:
    import hashlib

    with open_tpm(lab_host.tcti) as tpm:
        before = tpm.pcr_read("sha256", [16])[16]
        assert before == b"\0" * 32
        digest = hashlib.sha256(b"x").digest()
        tpm.pcr_extend(16, {"sha256": digest, "sha1": hashlib.sha1(b"x").digest()})
        assert tpm.pcr_read("sha256", [16])[16] == hashlib.sha256(before + digest).digest()
        assert len(tpm.pcr_read("sha256", range(24))) == 24


def test_seal_unseal_and_policy(lab_host: LabHost) -> None:
    with open_tpm(lab_host.tcti) as tpm:
        values = tpm.pcr_read("sha256", [0, 7])
        blob = seal(tpm, b"secret-key-material-32-bytes!!!!", "sha256", values)
        assert unseal(tpm, blob) == b"secret-key-material-32-bytes!!!!"
        assert b"secret-key" not in blob.public + blob.private
        tpm.pcr_extend(7, {"sha256": b"\1" * 32, "sha1": b"\1" * 20})
        with pytest.raises(PolicyNotSatisfied) as err:
            unseal(tpm, blob)
    assert "PCRs 0, 7 differ from the values it was sealed to" in err.value.message


def test_replace_tpm_gives_new_ek(lab_dir: Path, lab_host: LabHost) -> None:
    with open_tpm(lab_host.tcti) as tpm:
        ek_before = tpm.ek_public("ecc")
        rsa_before = tpm.ek_public("rsa")
        assert tpm.ek_public("ecc") == ek_before  # derived from the seed: stable
    host = lab.replace_tpm(lab_dir, "host1")
    assert host.tpm_generation == 2
    with open_tpm(host.tcti) as tpm:
        assert tpm.ek_public("ecc") != ek_before
        assert tpm.ek_public("rsa") != rsa_before


def test_clear_tpm_changes_storage_seed(lab_dir: Path, lab_host: LabHost) -> None:
    with open_tpm(lab_host.tcti) as tpm:
        blob = seal(tpm, b"k" * 32, "sha256", tpm.pcr_read("sha256", [7]))
        ek_before = tpm.ek_public("ecc")
    host = lab.clear_tpm(lab_dir, "host1")
    with open_tpm(host.tcti) as tpm:
        with pytest.raises(SealedObjectWrongTpm) as err:
            unseal(tpm, blob)
        # TPM2_Clear changes the storage seed, not the endorsement seed.
        assert tpm.ek_public("ecc") == ek_before
    assert "not the TPM the key was sealed to, or the TPM was cleared" in err.value.message


def test_dictionary_attack_lockout(lab_host: LabHost, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"TPM2TOOLS_TCTI": lab_host.tcti, "PATH": "/usr/bin:/bin"}

    def tools(*args: str, check: bool = True) -> None:
        subprocess.run(args, env=env, check=check, capture_output=True)

    tools(
        "tpm2_dictionarylockout",
        "--setup-parameters",
        "--max-tries=1",
        "--recovery-time=600",
        "--lockout-recovery-time=600",
    )
    # A wrong password on a DA-protected NV index counts; one failure is enough now.
    tools(
        "tpm2_nvdefine",
        "0x1500016",
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "authread|authwrite",
        "-p",
        "nvpass",
    )
    subprocess.run(
        ["tpm2_nvwrite", "0x1500016", "-C", "0x1500016", "-P", "nvpass", "-i", "-"],
        input=b"12345678",
        env=env,
        check=True,
        capture_output=True,
    )
    tools("tpm2_nvread", "0x1500016", "-C", "0x1500016", "-P", "wrong", check=False)
    with open_tpm(lab_host.tcti) as tpm:
        assert tpm.in_lockout()
        # Any DA-protected authorisation now fails with TPM_RC_LOCKOUT, translated.
        with pytest.raises(TpmLockout) as err, tpm.doing("read the NV index"):
            tpm._nv_read(0x1500016)
    assert "dictionary-attack lockout" in err.value.message
    assert "tpm2_dictionarylockout --clear-lockout" in err.value.remedy
    code, out, _ = run_cli(
        ["--tcti", lab_host.tcti, "tpm", "info", "--json", "--eventlog", str(lab_host.eventlog)],
        capsys,
    )
    assert code == 1
    assert json.loads(out)["dictionary_attack_lockout"] is True


def test_stopped_tpm_raises_unavailable(lab_dir: Path, lab_host: LabHost) -> None:
    lab.stop(lab_dir, "host1")
    with pytest.raises(TpmUnavailable):
        open_tpm(lab_host.tcti)
