"""Live checks on lab hosts: the pre-flight says whether the sealed configuration will unlock,
and why not, before any unlock; the real unlock that follows agrees, and the log scanner
explains its error the same way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.agent.state import AgentState
from hostseal.doctor import KnowledgeBase, evaluate
from hostseal.doctor.checks import LABELS, REASONS
from hostseal.doctor.knowledge import CHECK_IDS
from hostseal.errors import SecurityViolation
from hostseal.hostinfo import HostInfo, SecureBoot
from hostseal.secureconfig import manager
from hostseal.secureconfig.recoverykey import key_check_value
from hostseal.tpm import TpmBusy, TpmFacts, TpmNotSupported
from hostseal.tpm.attestation import AkBlob

from ._hosts import EXEC_CMDLINE, REPORTABLE, SCENARIOS, Host, Seen, printed
from .conftest import Cli

pytestmark = pytest.mark.swtpm


def test_every_reportable_state_has_a_scenario() -> None:
    assert set(SCENARIOS) == REPORTABLE
    assert list(LABELS) == list(REASONS) == list(CHECK_IDS)


def test_violations_are_foreseen(
    lab_dir: Path, tmp_path: Path, shm: Path, kb: KnowledgeBase, run: Cli
) -> None:
    seen = Seen("violations", kb)
    h = Host.start(lab_dir, tmp_path, kb, "viol", boot=lab.BootConfig(kernel_cmdline=EXEC_CMDLINE))
    h.save()
    r = h.checks(seen)
    for check in ("tpm", "sha256-bank", "secure-boot", "drtm", "lockout", "eventlog", "config"):
        assert r[check].state == "pass", r[check]
    assert r["requirements"].state == "pass"
    assert r["unlock"].state == "pass"
    assert r["unlock"].detail.startswith("will unlock: Same TPM, sealed PCRs 7 unchanged")
    assert r["unlock"].data["tpm_probed"] is True
    assert r["recovery-keys"].state == "pass"
    assert (r["escrow"].state, r["escrow"].reason) == ("fail", "not-escrowed")
    assert (r["agent"].state, r["agent"].reason) == ("warn", "not-enrolled")
    manager.unlock(h.ctx, shm / "good")  # the pre-flight was right

    # Recovery key shown (audited), then escrowed; the agent enrolled.
    [key] = manager.recovery_list(h.ctx, "test")
    r = h.checks(seen)
    assert (r["escrow"].state, r["escrow"].reason) == ("warn", "listed-only")
    assert "shown by 'hostseal recovery list'" in r["escrow"].detail
    agent = AgentState(h.agent_dir)
    agent.save_escrowed({key.formatted_id: key_check_value(key.recovery_id, key.secret)})
    agent.save_ak(AkBlob(b"public", b"private"), "ecc")
    agent.save_token("agent-token")
    r = h.checks(seen)
    assert r["escrow"].state == "pass" and r["agent"].state == "pass"
    assert "does not record its last verdict" in r["agent"].detail
    all_pass = run(
        "--tcti", h.host.tcti, "doctor", "--json", "--eventlog", str(h.host.eventlog),
        "--bootbank", str(h.bootbank), "--agent-dir", str(h.agent_dir),
    )  # fmt: skip
    assert all_pass.code == 0, all_pass.out
    assert all_pass.json()["summary"] == {"pass": 12, "warn": 0, "fail": 0, "skip": 0}

    # Require exec-installed-only: sealed to PCR 7 and the command line's PCR 8.
    manager.set_policy(h.ctx, require_exec_installed_only=True)
    assert h.checks(seen)["unlock"].detail.startswith("will unlock: Same TPM, sealed PCRs 7, 8")

    # Secure Boot turned off: foreseen, then confirmed by the real unlock.
    h.reboot(secure_boot=False)
    r = h.checks(seen)
    assert (r["secure-boot"].state, r["requirements"].reason) == ("fail", "secure-boot")
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "secure-boot")
    assert r["unlock"].detail.startswith("will not unlock: Secure Boot is disabled on this boot")
    assert "PCR 7: Secure Boot went from enabled to disabled" in r["unlock"].detail
    assert r["unlock"].data["changed_pcrs"] == [7]
    assert r["unlock"].finding is not None
    assert r["unlock"].finding.id == "violation-secure-boot-off"
    err = h.unlock_error(shm / "sb-off")
    assert isinstance(err, SecurityViolation)
    assert h.explained(printed(err)) == ["violation-secure-boot-off"]
    human = run(
        "--tcti", h.host.tcti, "doctor", "--eventlog", str(h.host.eventlog),
        "--bootbank", str(h.bootbank), "--agent-dir", str(h.agent_dir),
    )  # fmt: skip
    assert human.code == 1
    assert "FAIL  Unlocks on this boot (pre-flight)" in human.out
    assert "will not unlock: Secure Boot is disabled" in human.out
    assert human.out.count("[violation-secure-boot-off]") == 1  # one explanation, 3 checks
    assert "Seen by: UEFI Secure Boot, Requirements on this boot, Unlocks" in human.out
    # A rescue with the recovery key is not sealed again while Secure Boot is off.
    key_file = tmp_path / "key.txt"
    key_file.write_text(key.formatted_key)
    rescue = run(
        "--tcti", h.host.tcti, "config", "--bootbank", str(h.bootbank),
        "--eventlog", str(h.host.eventlog), "unlock",
        "--to", str(shm / "rescue"), "--recovery-key-file", str(key_file),
    )  # fmt: skip
    assert rescue.code == 0, rescue.err
    assert h.explained(rescue.err) == ["rescue-not-resealed"]

    # Same Secure Boot, another command line that still meets the requirement: PCR 8.
    h.reboot(secure_boot=True, kernel_cmdline=EXEC_CMDLINE + " mitigations=auto")
    r = h.checks(seen)
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "pcr-policy")
    assert "kernel command line" in r["unlock"].detail and "PCR 8 changed" in r["unlock"].detail
    assert r["requirements"].state == "pass"
    err = h.unlock_error(shm / "cmdline")
    assert err.details["cause"] == "pcr-policy"
    assert h.explained(printed(err)) == ["violation-pcr-policy"]

    # A command line without the exec-installed-only settings: the requirement is unmet.
    h.reboot(kernel_cmdline=lab.firmware.DEFAULT_CMDLINE)
    r = h.checks(seen)
    assert (r["requirements"].state, r["requirements"].reason) == ("fail", "exec-installed-only")
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "requirements")
    assert "lockdown=integrity" in r["unlock"].detail
    err = h.unlock_error(shm / "no-exec")
    assert h.explained(printed(err)) == ["exec-installed-only-unmet"]
    seen.verify()


def test_tpm_cleared_replaced_missing_are_foreseen(
    lab_dir: Path, tmp_path: Path, shm: Path, kb: KnowledgeBase, run: Cli
) -> None:
    seen = Seen("tpm-identity", kb)
    h = Host.start(lab_dir, tmp_path, kb, "ident")
    h.save()
    [key] = manager.recovery_list(h.ctx, "test")
    backup = tmp_path / "backup.tgz"
    manager.backup(h.ctx, backup)

    # Cleared: same EK, so only the probe can tell; without it the pre-flight says so.
    h.host = lab.clear_tpm(lab_dir, "ident")
    r = h.checks(seen)
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "tpm-cleared")
    assert "The TPM was cleared since the configuration was sealed" in r["unlock"].detail
    not_asked = h.checks(seen, probe=False)["unlock"]
    assert not_asked.state == "pass" and "a cleared TPM would not show" in not_asked.detail
    assert not_asked.data["tpm_probed"] is False
    err = h.unlock_error(shm / "cleared")
    assert err.details["cause"] == "tpm-cleared"
    assert h.explained(printed(err)) == ["violation-tpm-cleared"]

    # Replaced (a system-board swap): another EK.
    h.host = lab.replace_tpm(lab_dir, "ident")
    r = h.checks(seen)
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "tpm-replaced")
    assert "not the TPM the configuration was sealed to" in r["unlock"].detail
    assert r["tpm"].state == "pass"
    err = h.unlock_error(shm / "replaced")
    assert err.details["cause"] == "tpm-replaced"
    assert h.explained(printed(err)) == ["violation-tpm-replaced"]
    restored = run("--tcti", h.host.tcti, "config", "--bootbank", str(h.bootbank),
                   "--eventlog", str(h.host.eventlog), "restore", str(backup))  # fmt: skip
    assert restored.code == 1
    assert h.explained(restored.err) == ["backup-bound-to-other-tpm"]
    # Recovery seals it to the new TPM; the notice asks for a rotation.
    outcome = manager.unlock(h.ctx, shm / "recovered", key.secret)
    assert outcome.resealed is True
    assert h.explained("\n".join(f"Note: {n}" for n in outcome.notices)) == ["recovery-key-used"]
    assert h.checks(seen)["unlock"].state == "pass"

    # No TPM at all.
    lab.stop(lab_dir, "ident")
    r = h.checks(seen)
    assert (r["tpm"].state, r["tpm"].reason) == ("fail", "unavailable")
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "tpm-unavailable")
    for check in ("sha256-bank", "secure-boot", "drtm", "lockout"):
        assert r[check].state == "skip"
    assert r["config"].state == "pass"  # the bundle is read without a TPM
    err = h.unlock_error(shm / "no-tpm")
    assert h.explained(printed(err)) == ["violation-tpm-unavailable"]
    seen.verify()


def test_sha1_only_host_bundle_states_and_lockout(
    lab_dir: Path, tmp_path: Path, kb: KnowledgeBase, run: Cli
) -> None:
    seen = Seen("sha1-host", kb)
    h = Host.start(lab_dir, tmp_path, kb, "sha1", banks=("sha1",))
    r = h.checks(seen)
    assert r["sha256-bank"].state == "fail" and "active banks: sha1" in r["sha256-bank"].detail
    assert r["sha256-bank"].finding is not None
    assert r["sha256-bank"].finding.id == "sha256-bank-inactive"
    assert (r["config"].state, r["config"].reason) == ("warn", "no-bundle")
    assert r["unlock"].state == r["eventlog"].state == r["drtm"].state == "skip"

    outcome = h.save()
    assert h.explained("\n".join(f"Note: {n}" for n in outcome.notices)) == ["mode-none"]
    r = h.checks(seen)
    assert (r["config"].state, r["config"].reason) == ("warn", "mode-none")
    assert "obfuscation, not encryption" in r["config"].detail
    assert r["unlock"].state == "pass" and "Mode NONE" in r["unlock"].detail
    assert r["requirements"].state == "pass"

    # Dictionary-attack lockout (as tests/tpm do it: one wrong password is enough).
    env = {"TPM2TOOLS_TCTI": h.host.tcti, "PATH": "/usr/bin:/bin"}
    for args in (
        ["tpm2_dictionarylockout", "--setup-parameters", "--max-tries=1",
         "--recovery-time=600", "--lockout-recovery-time=600"],
        ["tpm2_nvdefine", "0x1500016", "-C", "o", "-s", "8", "-a", "authread|authwrite",
         "-p", "nvpass"],
    ):  # fmt: skip
        subprocess.run(args, env=env, check=True, capture_output=True)
    subprocess.run(["tpm2_nvread", "0x1500016", "-C", "0x1500016", "-P", "wrong"], env=env,
                   capture_output=True, check=False)  # fmt: skip
    assert h.checks(seen)["lockout"].state == "fail"

    # A damaged state.tgz with a whole previous generation: used, with a warning.
    state = h.bootbank / "state.tgz"
    (h.bootbank / "state.tgz.previous").write_bytes(state.read_bytes())
    state.write_bytes(b"\x1f\x8b damaged")
    r = h.checks(seen)
    assert (r["config"].state, r["config"].reason) == ("warn", "fallback")
    assert "Using state.tgz.previous" in r["config"].detail
    (h.bootbank / "state.tgz.previous").unlink()
    r = h.checks(seen)
    assert (r["config"].state, r["config"].reason) == ("fail", "corrupt")
    assert r["unlock"].state == r["recovery-keys"].state == "skip"
    human = run("--tcti", h.host.tcti, "doctor", "--bootbank", str(h.bootbank),
                "--eventlog", str(h.host.eventlog), "--agent-dir", str(h.agent_dir))  # fmt: skip
    assert human.code == 1
    assert "[bundle-corrupt]" in human.out and "[tpm-lockout]" in human.out
    seen.verify()


def facts() -> TpmFacts:
    return TpmFacts("2.0", "IFX", "SLB9670", "7.85.0.0", 0, 159, "discrete", {"sha256": [0, 1]})


def test_synthetic_states(tmp_path: Path, kb: KnowledgeBase) -> None:
    """States no lab host can show: a busy TPM, a TPM 1.2, a dynamic launch."""
    from hostseal.doctor.observe import HostState

    seen = Seen("synthetic", kb)
    base = ("device:/dev/tpmrm0", tmp_path / "log", tmp_path / "bootbank")
    busy = HostState(*base, tpm_error=TpmBusy("The TPM is busy (it asked to retry).", "Wait."))
    r = seen.add(evaluate(busy, kb))
    assert (r["tpm"].state, r["tpm"].reason) == ("fail", "busy")
    old = HostState(*base, tpm_error=TpmNotSupported("The TPM at /dev/tpmrm0 is a TPM 1.2.", "x"))
    r = seen.add(evaluate(old, kb))
    assert r["tpm"].finding is not None and r["tpm"].finding.id == "tpm-1.2"
    launched = HostState(
        *base,
        host=HostInfo("device:/dev/tpmrm0", facts(), SecureBoot(True, "efivars"), True, False),
    )
    r = seen.add(evaluate(launched, kb))
    assert r["drtm"].state == "warn" and r["drtm"].finding is not None
    assert r["drtm"].finding.id == "txt-enabled"
    assert r["secure-boot"].state == "pass" and r["tpm"].detail.startswith("TPM 2.0 by IFX")
    seen.verify()
