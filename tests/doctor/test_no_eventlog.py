"""``hostseal doctor`` on a boot that left no TCG event log (REALBOOT obstacle 4): the event-log
check fails with the cause and the remedy (boot through the EFI stub), one finding explains it,
and the other checks still run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostseal.doctor import KnowledgeBase

from ._hosts import Host, Seen
from .conftest import Cli

pytestmark = pytest.mark.swtpm

EFI_STUB = "in GRUB use linuxefi and initrdefi instead of linux and initrd"


def test_no_event_log_is_a_finding_with_cause_and_remedy(
    lab_dir: Path, tmp_path: Path, kb: KnowledgeBase, run: Cli
) -> None:
    seen = Seen("no-eventlog-host", kb)
    h = Host.start(lab_dir, tmp_path, kb, "nolog")
    h.save()
    missing = tmp_path / "binary_bios_measurements"
    r = h.checks(seen, eventlog=missing)
    check = r["eventlog"]
    assert (check.state, check.reason) == ("fail", "absent")
    assert check.detail.startswith(f"No TCG event log for this boot at {missing}")
    assert check.finding is not None and check.finding.id == "eventlog-absent"
    assert any(EFI_STUB in step for step in check.remedy)
    assert r["tpm"].state == r["sha256-bank"].state == r["lockout"].state == "pass"
    seen.verify()

    args = ("--tcti", h.host.tcti, "doctor", "--bootbank", str(h.bootbank),
            "--eventlog", str(missing), "--agent-dir", str(h.agent_dir))  # fmt: skip
    done = run(*args)
    assert done.code == 1
    assert "Traceback" not in done.out + done.err
    assert "FAIL This boot left no TCG event log [eventlog-absent]" in done.out
    assert EFI_STUB in done.out
    # the unreadable-log finding is folded into this one, not shown beside it
    assert "[eventlog-unreadable]" not in done.out
    data = run(*args, "--json").json()
    checks = data["checks"]
    assert isinstance(checks, list)
    [eventlog] = [c for c in checks if c["check"] == "eventlog"]
    assert eventlog["reason"] == "absent"
