"""``recovery rotate`` killed at any moment never leaves only a key nobody saw (issue 12, item 13).

A rotation is two durable steps: a generation with the old and the new recovery key (both work),
then, once the new key has been shown, a generation without the old one. After a kill the old
key works, or the new one was shown and works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hostseal.secureconfig import decrypt_payload, open_recovery_slots, parse_recovery_key
from hostseal.secureconfig.errors import NoRecoverySlotMatches
from hostseal.secureconfig.store import Store

from .conftest import Env

pytestmark = pytest.mark.swtpm

KILL_POINTS = 24
HOSTSEAL = [sys.executable, "-m", "hostseal.cli"]


def _opens(env: Env, key: str) -> bool:
    """Whether ``key`` opens the bootbank's current generation (slot and payload)."""
    bundle = Store(env.bootbank).load()
    try:
        data_key, _ = open_recovery_slots(bundle.info.recovery_slots, parse_recovery_key(key))
    except NoRecoverySlotMatches:
        return False
    decrypt_payload(data_key, bundle.payload)
    return True


def _shown(out: bytes) -> str | None:
    """The key a killed ``recovery rotate --json`` printed in full, if it did."""
    try:
        return str(json.loads(out)["key"])
    except ValueError:
        return None


def test_rotate_killed_at_many_points_leaves_a_shown_key(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    _, known = env.recovery_key()
    out_file = env.bootbank.parent / "rotate.out"

    def rotate() -> subprocess.Popen[bytes]:
        with out_file.open("wb") as out:
            return subprocess.Popen(
                [*HOSTSEAL, "recovery", "rotate", "--json"],
                env={**os.environ},
                stdout=out,
                stderr=subprocess.DEVNULL,
            )

    def starts() -> int:
        audit = Store(env.bootbank).audit_records()
        return sum(r["action"] == "recovery.rotate.start" for r in audit)

    def after_step_one(proc: subprocess.Popen[bytes], offset: float) -> None:
        """Wait until step 1 is on disk (its audit line), then ``offset`` seconds more."""
        seen = starts()
        deadline = time.monotonic() + 60
        while starts() == seen and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(offset)

    start = time.monotonic()
    assert rotate().wait() == 0
    duration = time.monotonic() - start
    known = _shown(out_file.read_bytes()) or ""
    assert _opens(env, known)
    killed_mid_way = both_worked = 0
    for point in range(KILL_POINTS):
        proc = rotate()
        if point % 2:  # between the two steps, at growing offsets
            after_step_one(proc, 0.004 * (point // 2))
        else:  # anywhere, from the start of the process to its end
            time.sleep(duration * point / KILL_POINTS)
        proc.send_signal(signal.SIGKILL)
        if proc.wait() == -signal.SIGKILL:
            killed_mid_way += 1
        new = _shown(out_file.read_bytes())
        old_works = _opens(env, known)
        new_works = new is not None and _opens(env, new)
        assert old_works or new_works, f"kill point {point}: only an unseen key works"
        assert len(Store(env.bootbank).load().info.recovery_slots) <= 2
        both_worked += old_works and new_works
        if new_works and not old_works:
            assert new is not None
            known = new
    assert killed_mid_way >= KILL_POINTS // 2
    assert both_worked >= 1  # some kills landed between the two steps
    # A rotation run to its end finishes whatever was interrupted: one key, the one shown.
    assert rotate().wait() == 0
    final = _shown(out_file.read_bytes())
    assert final is not None and _opens(env, final)
    assert not _opens(env, known)
    assert len(Store(env.bootbank).load().info.recovery_slots) == 1


def test_rotate_whose_key_cannot_be_shown_keeps_the_old_key(env: Env) -> None:
    """Standard output is a closed pipe: the new key is never shown, so the old one stays."""
    env.ok("config", "save", "--from", str(env.config))
    recovery_id, old = env.recovery_key()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*HOSTSEAL, "recovery", "rotate"],
            env={**os.environ},
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "The new recovery key could not be shown (standard output: Broken pipe)" in err
    assert "the old recovery key still works" in err
    assert "Traceback" not in err
    assert _opens(env, old)
    status = env.ok("config", "status", "--json").json()
    assert recovery_id in status["recovery_key_ids"]  # type: ignore[index]
    assert status["rotation_pending"]["retiring"] == recovery_id  # type: ignore[index]
    assert "A recovery-key rotation was interrupted" in env.ok("config", "status").err
    # Run again with a working output: the rotation completes, and only the shown key works.
    rotated = env.ok("recovery", "rotate", "--json").json()
    assert _opens(env, rotated["key"])  # type: ignore[index]
    assert not _opens(env, old)
    status = env.ok("config", "status", "--json").json()
    assert status["recovery_key_ids"] == [rotated["recovery_id"]]  # type: ignore[index]
