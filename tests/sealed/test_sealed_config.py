"""The sealed host configuration on lab hosts: the acceptance scenarios of ESXi's secure
configuration, played for real against software TPMs."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.errors import EXIT_SECURITY_VIOLATION
from hostseal.secureconfig import manager
from hostseal.secureconfig._generation import open_data_key

from .conftest import Env

pytestmark = pytest.mark.swtpm

HEADLINE = "Unable to restore the system configuration. A security violation was detected."


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def unlocked(env: Env, *extra: str) -> Path:
    target = env.target()
    env.ok("config", "unlock", "--to", str(target), *extra)
    return target


def test_save_status_unlock(env: Env) -> None:
    saved = env.ok("config", "save", "--from", str(env.config))
    assert "Recovery key {" in saved.err and "Save it now" in saved.err
    status = env.ok("config", "status", "--json").json()
    assert status["mode"] == "TPM"  # type: ignore[index]
    assert status["require_secure_boot"] is True  # type: ignore[index]
    assert status["require_exec_installed_only"] is False  # type: ignore[index]
    assert status["sealed_pcrs"] == [7]  # type: ignore[index]
    assert len(status["recovery_key_ids"]) == 1  # type: ignore[index]
    human = env.ok("config", "status").out
    assert "Mode: TPM" in human and "Require Secure Boot: true" in human
    target = unlocked(env)
    assert same_tree(env.config, target / env.config.name)
    assert (target / env.config.name / "ssh" / "ssh_host_ed25519_key").stat().st_mode & 0o777 == (
        0o600
    )


def test_secure_boot_off_is_a_security_violation(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    before = env.snapshot()
    env.reboot(secure_boot=False)
    target = env.target()
    result = env.run("config", "unlock", "--to", str(target))
    assert result.code == EXIT_SECURITY_VIOLATION == 3
    assert HEADLINE in result.err
    assert "PCR 7: Secure Boot went from enabled to disabled" in result.err
    assert "PCR 7 changed: sealed" in result.err
    assert "Secure Boot is disabled on this boot, but this configuration requires it." in result.err
    assert "turn Secure Boot back on in the firmware setup" in result.err
    assert "--recovery-key-file" in result.err
    assert env.snapshot() == before  # byte for byte
    assert not target.exists()
    as_json = env.run("config", "unlock", "--to", str(target), "--json").json()
    assert as_json["error"] == "SecurityViolation"  # type: ignore[index]
    assert as_json["changed_pcrs"] == [7]  # type: ignore[index]
    assert as_json["cause"] == "pcr-policy"  # type: ignore[index]
    # Turning Secure Boot back on is the remedy: the same bundle unlocks again.
    env.reboot(secure_boot=True)
    unlocked(env)


def test_rescue_with_recovery_key_when_requirement_unmet(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    before = env.snapshot()
    env.reboot(secure_boot=False)
    target = env.target()
    result = env.ok(
        "config", "unlock", "--to", str(target), "--recovery-key-file", env.key_file(key)
    )
    assert same_tree(env.config, target / env.config.name)
    assert "NOT sealed again: Secure Boot is disabled on this boot" in result.err
    assert "Turn Secure Boot on in the firmware setup and reboot" in result.err
    snapshot = env.snapshot()
    assert snapshot.pop("audit.log").count(b"config.unlock.recovery") == 1
    before.pop("audit.log")
    assert snapshot == before


@pytest.mark.parametrize("change", ["replace-tpm", "clear-tpm"])
def test_new_or_cleared_tpm_then_recovery(env: Env, change: str) -> None:
    env.ok("config", "save", "--from", str(env.config))
    recovery_id, key = env.recovery_key()
    before = env.snapshot()
    if change == "replace-tpm":
        env.use(lab.replace_tpm(env.lab_dir, env.host.name))
        expected = "This is not the TPM the configuration was sealed to"
    else:
        env.use(lab.clear_tpm(env.lab_dir, env.host.name))
        expected = "The TPM was cleared since the configuration was sealed"
    result = env.run("config", "unlock", "--to", str(env.target()))
    assert result.code == 3
    assert HEADLINE in result.err and expected in result.err
    assert env.snapshot() == before
    # The recovery key opens it and seals it to the TPM now present.
    rescued = env.ok(
        "config", "unlock", "--to", str(env.target()), "--recovery-key-file", env.key_file(key)
    )
    assert "sealed to this host's TPM again" in rescued.err
    assert "rotate it now" in rescued.err
    target = unlocked(env)  # a plain unlock works again
    assert same_tree(env.config, target / env.config.name)
    # Rotation: a new key; the old one stops working.
    rotated = env.ok("recovery", "rotate", "--json").json()
    assert rotated["recovery_id"] != recovery_id  # type: ignore[index]
    refused = env.run(
        "config", "unlock", "--to", str(env.target()), "--recovery-key-file", env.key_file(key)
    )
    assert refused.code == 1
    assert "matches no recovery slot" in refused.err
    new_key = rotated["key"]  # type: ignore[index]
    env.ok(
        "config", "unlock", "--to", str(env.target()), "--recovery-key-file", env.key_file(new_key)
    )


def test_bundle_copied_to_another_host(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    other = lab.start(env.lab_dir, "esx2")
    env.use(other)
    result = env.run("config", "unlock", "--to", str(env.target()))
    assert result.code == 3
    assert "This is not the TPM the configuration was sealed to" in result.err
    target = env.target()
    env.ok("config", "unlock", "--to", str(target), "--recovery-key-file", env.key_file(key))
    assert same_tree(env.config, target / env.config.name)


def test_recovery_key_typo_and_wrong_key(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    before = env.snapshot()
    groups = key.split("-")
    digit = "1" if groups[4][2] != "1" else "2"
    groups[4] = groups[4][:2] + digit + groups[4][3:]
    typo = env.run(
        "config",
        "unlock",
        "--to",
        str(env.target()),
        "--recovery-key-file",
        env.key_file("-".join(groups)),
    )
    assert typo.code == 1
    assert "group 5" in typo.err
    wrong = "-".join(["000011"] * 16)
    refused = env.run(
        "config", "unlock", "--to", str(env.target()), "--recovery-key-file", env.key_file(wrong)
    )
    assert refused.code == 1
    assert "matches no recovery slot" in refused.err
    assert env.snapshot() == before


def test_mode_none_says_obfuscation(env: Env) -> None:
    env.monkeypatch.setenv("HOSTSEAL_TCTI", "swtpm:host=127.0.0.1,port=1")  # no TPM here
    saved = env.ok("config", "save", "--from", str(env.config))
    assert "created in mode NONE" in saved.err
    assert "obfuscated, not encrypted" in saved.err
    status = env.ok("config", "status", "--json").json()
    assert status["mode"] == "NONE"  # type: ignore[index]
    assert status["protection"] == "obfuscation, not encryption"  # type: ignore[index]
    assert "obfuscated, not encrypted" in env.ok("config", "status").err
    target = env.target()
    opened = env.ok("config", "unlock", "--to", str(target))
    assert "obfuscated, not encrypted" in opened.err
    assert same_tree(env.config, target / env.config.name)


def test_bootbank_holds_nothing_in_clear(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    state = env.bootbank / "state.tgz"
    work = env.bootbank.parent / "extract"
    work.mkdir()
    subprocess.run(["tar", "xzf", str(state), "-C", str(work)], check=True)
    assert sorted(p.name for p in work.iterdir()) == [
        "encryption.info",
        "local.tgz.ve",
        "recovery-keys.ve",
        "seal-eventlog.bin",
    ]
    bad = subprocess.run(
        ["tar", "xzf", str(work / "local.tgz.ve"), "-C", str(work)], capture_output=True, text=True
    )
    assert bad.returncode != 0
    ctx = manager.HostContext(env.host.tcti, env.host.eventlog, env.bootbank)
    data_key = open_data_key(ctx, ctx.store.load())
    secrets = [
        data_key,
        b"TOP-SECRET-LIBVIRT-PASSPHRASE",
        b"PRIVATE-SSH-HOST-KEY-MATERIAL",
        key.encode(),
        key.replace("-", "").encode(),
    ]
    files = [p for p in list(env.bootbank.rglob("*")) + list(work.rglob("*")) if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} in clear in {path}"


def test_set_refuses_what_host_cannot_satisfy(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    env.ok("config", "set", "--no-require-secure-boot")
    env.reboot(secure_boot=False)
    env.ok("config", "save", "--from", str(env.config))  # not required: still unlocks
    before = env.snapshot()
    result = env.run("config", "set", "--require-secure-boot")
    assert result.code == 1
    assert (
        "Unable to change the encryption mode and policy: Secure Boot is disabled on this boot."
    ) in result.err
    assert "Turn Secure Boot on in the firmware setup and reboot." in result.err
    assert env.snapshot() == before
    eio = env.run("config", "set", "--require-exec-installed-only")
    assert eio.code == 1 and "Unable to change the encryption mode and policy" in eio.err
    assert env.snapshot() == before


def test_exec_installed_only(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    refused = env.run("config", "set", "--require-exec-installed-only")
    assert refused.code == 1
    assert "lacks lockdown=integrity (or confidentiality), ima_appraise=enforce" in refused.err
    hardened = env.host.boot.kernel_cmdline + (
        " lockdown=integrity ima_appraise=enforce ima_policy=appraise_tcb"
    )
    env.reboot(kernel_cmdline=hardened)
    env.ok("config", "set", "--require-exec-installed-only")
    status = env.ok("config", "status", "--json").json()
    assert status["require_exec_installed_only"] is True  # type: ignore[index]
    assert status["sealed_pcrs"] == [7, 8]  # type: ignore[index]
    unlocked(env)
    env.reboot(kernel_cmdline=env.host.boot.kernel_cmdline.replace(" lockdown=integrity", ""))
    result = env.run("config", "unlock", "--to", str(env.target()))
    assert result.code == 3
    assert "PCR 8: kernel command line changed" in result.err
    assert "lacks lockdown=integrity" in result.err


def test_backup_restore_bound_to_tpm(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, key = env.recovery_key()
    backup = env.bootbank.parent / "config.backup"
    env.ok("config", "backup", "--out", str(backup))
    env.ok("config", "restore", str(backup))  # same TPM: fine
    other = lab.start(env.lab_dir, "esx3")
    env.use(other)
    env.monkeypatch.setenv("HOSTSEAL_BOOTBANK", str(env.bootbank.parent / "bootbank3"))
    refused = env.run("config", "restore", str(backup))
    assert refused.code == 1
    assert "This backup is sealed to a TPM that will not release its key here" in refused.err
    assert "no flag bypasses the TPM binding" in refused.err
    env.ok("config", "restore", str(backup), "--recovery-key-file", env.key_file(key))
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    assert same_tree(env.config, target / env.config.name)


def test_recovery_list_is_audited(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    recovery_id, key = env.recovery_key()
    assert recovery_id.startswith("{") and len(key.split("-")) == 16
    human = env.ok("recovery", "list", "--reason", "printing it for the safe").out
    assert recovery_id in human and key in human
    audit = (env.bootbank / "audit.log").read_text()
    assert audit.count('"action": "recovery.list"') == 2
    assert '"reason": "printing it for the safe"' in audit
    assert key not in audit


def test_unlock_refuses_disk_target(env: Env, tmp_path: Path) -> None:
    env.ok("config", "save", "--from", str(env.config))
    result = env.run("config", "unlock", "--to", str(tmp_path / "on-disk"))
    assert result.code == 1
    assert "is not on a tmpfs" in result.err
    env.ok("config", "unlock", "--to", str(tmp_path / "on-disk"), "--allow-disk")
