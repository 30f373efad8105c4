"""A host with Secure Boot off (so the key is bound to its TPM only): event-log states, a
configuration without recovery key, a TPM that cannot be asked, and the checklist before a
board swap, GO / NO-GO."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.agent.state import AgentState
from hostseal.doctor import KnowledgeBase, before_board_swap, evaluate
from hostseal.doctor.preflight import Probe, assess
from hostseal.secureconfig import manager
from hostseal.secureconfig.recoverykey import RecoveryKey, key_check_value
from hostseal.tpm import TpmError, TpmLockout

from ._hosts import Host, Seen
from .conftest import Cli

pytestmark = pytest.mark.swtpm


@pytest.fixture
def host(lab_dir: Path, tmp_path: Path, kb: KnowledgeBase) -> Host:
    h = Host.start(lab_dir, tmp_path, kb, "nosb", boot=lab.BootConfig(secure_boot=False))
    outcome = h.save()
    assert h.explained("\n".join(f"Note: {n}" for n in outcome.notices)) == [
        "secure-boot-not-enforced"
    ]
    return h


def test_host_without_secure_boot(host: Host, tmp_path: Path, kb: KnowledgeBase) -> None:
    seen = Seen("secure-boot-off-host", kb)
    r = host.checks(seen)
    assert r["secure-boot"].state == "fail"
    assert (r["requirements"].state, r["requirements"].reason) == ("warn", "not-enforced")
    assert r["unlock"].state == "pass"
    assert "sealed this TPM only unchanged" in r["unlock"].detail

    # A log that does not parse: nothing measured can be read, and the unlock would fail
    # reading it (no log at all is tests/doctor/test_no_eventlog.py).
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"garbage" * 10)
    r = host.checks(seen, eventlog=garbage)
    assert (r["eventlog"].state, r["eventlog"].reason) == ("fail", "unreadable")
    assert (r["secure-boot"].state, r["secure-boot"].reason) == ("warn", "unknown")
    assert (r["unlock"].state, r["unlock"].reason) == ("fail", "eventlog")
    assert r["requirements"].state == "skip"

    # The log of another boot: it does not replay to this boot's PCRs.
    old = tmp_path / "old-eventlog.bin"
    shutil.copy(host.host.eventlog, old)
    host.reboot(kernel_cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-lab root=/dev/vda1 ro")
    r = host.checks(seen, eventlog=old)
    assert (r["eventlog"].state, r["eventlog"].reason) == ("fail", "mismatch")
    assert "PCRs 8" in r["eventlog"].detail

    # States a healthy lab TPM does not show, from this host's real observations.
    state = host.observe()
    assert state.bundle is not None and state.preflight.will_unlock is True
    for error, reason, finding in (
        (TpmLockout("The TPM is in dictionary-attack lockout.", "Wait."), "lockout", "tpm-lockout"),
        (TpmError("The TPM refused to unseal (rc 0x101).", ""), "tpm-error", "tpm-command-failed"),
    ):
        state.preflight = assess(
            state.bundle,
            tpm_error=None,
            ek_fingerprint=state.ek_fingerprint,
            current_pcrs=state.current_pcrs,
            boot=state.boot,
            probe=Probe("error", error),
        )
        r = seen.add(evaluate(state, kb))
        assert (r["unlock"].state, r["unlock"].reason) == ("warn", reason)
        assert r["unlock"].finding is not None and r["unlock"].finding.id == finding
        assert r["unlock"].detail.startswith("unknown: ")
    info = state.bundle.info
    state.bundle.info = dataclasses.replace(info, recovery_slots=[])
    r = seen.add(evaluate(state, kb))
    assert (r["recovery-keys"].state, r["recovery-keys"].reason) == ("fail", "none")
    assert r["escrow"].state == "skip"
    seen.verify()


def swap(host: Host, **kw: object) -> dict[str, object]:
    report = before_board_swap(host.observe(), **kw)  # type: ignore[arg-type]
    data = report.to_dict()
    assert data["go"] is report.go
    return data


def items(data: dict[str, object]) -> dict[str, dict[str, object]]:
    return {i["item"]: i for i in data["items"]}  # type: ignore[attr-defined, index]


def test_before_board_swap(host: Host, tmp_path: Path, run: Cli) -> None:
    [key] = manager.recovery_list(host.ctx, "test")
    key_file = tmp_path / "recovery-key.txt"
    key_file.write_text(key.formatted_key + "\n")
    backup = tmp_path / "backup.tgz"

    # Nothing saved: NO-GO, and it says what is missing.
    data = swap(host)
    assert data["verdict"] == "NO-GO"
    got = items(data)
    assert got["recovery-keys"]["ok"] and key.formatted_id in str(got["recovery-keys"]["detail"])
    assert not got["key-saved"]["ok"] and not got["backup"]["ok"]
    assert "shown by 'hostseal recovery list'" in str(got["key-saved"]["detail"])
    assert len(data["missing"]) == 2  # type: ignore[arg-type]
    assert got["tpm"]["gating"] is False and "SHA-256 bank active" in str(got["tpm"]["detail"])

    # A backup of the current generation and the saved key, proven: GO.
    manager.backup(host.ctx, backup)
    text = key_file.read_text()
    data = swap(host, backup=backup, recovery_key_text=text, recovery_key_source=str(key_file))
    assert data["verdict"] == "GO", data
    got = items(data)
    assert f"the key in {key_file} opens recovery slot {key.formatted_id}" in str(
        got["key-saved"]["detail"]
    )
    assert "identical to the current configuration" in str(got["backup"]["detail"])
    assert "the saved recovery key opens it" in str(got["backup"]["detail"])

    # The wrong key: NO-GO, even with the backup.
    wrong = RecoveryKey.generate().formatted_key
    data = swap(host, backup=backup, recovery_key_text=wrong, recovery_key_source="other.txt")
    assert data["verdict"] == "NO-GO"
    assert "does not open this configuration" in str(items(data)["key-saved"]["detail"])

    # Escrowed by the agent: no key file needed.
    AgentState(host.agent_dir).save_escrowed(
        {key.formatted_id: key_check_value(key.recovery_id, key.secret)}
    )
    data = swap(host, backup=backup)
    assert data["verdict"] == "GO"
    assert "escrowed with the attestation service" in str(items(data)["key-saved"]["detail"])

    # A new generation makes the backup stale: NO-GO until a new one is taken.
    host.save()
    data = swap(host, backup=backup)
    assert data["verdict"] == "NO-GO"
    assert "is generation 1; the current configuration is generation 2" in str(
        items(data)["backup"]["detail"]
    )
    damaged = tmp_path / "damaged.tgz"
    damaged.write_bytes(b"not a backup")
    assert "is not a usable backup" in str(items(swap(host, backup=damaged))["backup"]["detail"])

    # The command line: exit 1 for NO-GO, 0 for GO.
    common = ["--tcti", host.host.tcti, "doctor", "--bootbank", str(host.bootbank),
              "--eventlog", str(host.host.eventlog),
              "--agent-dir", str(host.agent_dir)]  # fmt: skip
    no_go = run(*common, "before-board-swap", "--backup", str(backup))
    assert no_go.code == 1
    assert "NO-GO" in no_go.out and "Take a new backup" in no_go.out
    assert "After the swap:" in no_go.out
    manager.backup(host.ctx, backup)
    go = run(*common, "before-board-swap", "--backup", str(backup), "--recovery-key-file",
             str(key_file), "--json")  # fmt: skip
    assert go.code == 0, go.out
    assert go.json()["verdict"] == "GO"
    assert any("recovery key" in step for step in go.json()["after_the_swap"])  # type: ignore[attr-defined]


def test_before_board_swap_mode_none_and_nothing(
    lab_dir: Path, tmp_path: Path, kb: KnowledgeBase
) -> None:
    h = Host.start(lab_dir, tmp_path, kb, "none", banks=("sha1",))
    data = swap(h)
    assert data["verdict"] == "GO"
    assert "nothing is bound to this TPM" in str(items(data)["config"]["detail"])
    h.save()  # mode NONE: not bound to the TPM either
    data = swap(h)
    assert data["verdict"] == "GO"
    assert "mode NONE" in str(items(data)["config"]["detail"])
    (h.bootbank / "state.tgz").write_bytes(b"damaged")
    data = swap(h)
    assert data["verdict"] == "NO-GO"
    assert "cannot be read" in str(items(data)["config"]["detail"])
