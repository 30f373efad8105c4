"""An adopt killed at any moment leaves the old state or the new one, both usable: the path is
not sealed and its plaintext is intact on disk, or it is sealed with exactly that content. The
plaintext is never gone before the new generation is in place."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .conftest import Env
from .test_adopt import KEY_TEXT, Host, host_fixture  # noqa: F401

pytestmark = pytest.mark.swtpm

KILL_POINTS = 16


def sealed_key(env: Env, host: Host) -> str | None:
    """The adopted key's sealed content, or ``None`` if the bundle does not hold it."""
    target = env.target()
    env.ok("config", "unlock", "--to", str(target))
    copy = target / ".hostseal-adopted" / "root" / str(host.key).lstrip("/")
    return copy.read_text() if copy.exists() else None


def test_adopt_killed_at_many_points_leaves_old_or_new_state(env: Env, host: Host) -> None:
    env.ok("config", "save", "--from", str(env.config))
    old_bootbank = env.bootbank.parent / "bootbank-before"
    shutil.copytree(env.bootbank, old_bootbank)
    adopt = [sys.executable, "-m", "hostseal.cli", "config", "adopt", str(host.key), "--no-mount"]

    def reset() -> None:
        shutil.rmtree(env.bootbank)
        shutil.copytree(old_bootbank, env.bootbank)
        shutil.rmtree(host.live, ignore_errors=True)
        host.key.write_text(KEY_TEXT)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(adopt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    began = time.monotonic()
    assert start().wait() == 0
    duration = time.monotonic() - began
    states = set()
    for point in range(KILL_POINTS):
        reset()
        proc = start()
        time.sleep(duration * 1.2 * point / KILL_POINTS)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sealed = sealed_key(env, host)
        on_disk = host.key.read_bytes()
        if sealed is None:
            states.add("old")
            assert on_disk == KEY_TEXT.encode(), f"plaintext lost before sealing (point {point})"
        else:
            assert sealed == KEY_TEXT
            # Sealed: the disk holds the plaintext (not yet wiped), zeros, or nothing.
            states.add("new-wiped" if on_disk.strip(b"\0") == b"" else "new-on-disk")
            assert on_disk.strip(b"\0") in (b"", KEY_TEXT.encode())
            if on_disk == KEY_TEXT.encode():
                # Interrupted between sealing and wiping: adopting again finishes it.
                again = env.ok("config", "adopt", str(host.key), "--no-mount")
                assert "an earlier adopt was interrupted" in again.err
                assert host.key.stat().st_size == 0
    assert "old" in states and ("new-wiped" in states or "new-on-disk" in states), states
    # Whatever happened, the host goes on: the bundle unlocks and holds the key.
    reset()
    env.ok("config", "adopt", str(host.key), "--no-mount")
    assert sealed_key(env, host) == KEY_TEXT
    assert sorted(p.name for p in env.bootbank.iterdir()) == ["state.tgz"]
    assert os.path.getsize(host.key) == 0


def test_adopt_waits_for_the_bootbank_lock(env: Env, host: Host) -> None:
    """Another writer (the hourly auto-backup) holds the bootbank: an adopt waits for it instead
    of writing a generation from a state that is about to change."""
    env.ok("config", "save", "--from", str(env.config))
    before = env.snapshot()
    fd = os.open(env.bootbank, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, "-m", "hostseal.cli", "config", "adopt", str(host.key), "--no-mount"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(2.0)
        assert proc.poll() is None  # still waiting
        assert env.snapshot() == before
        assert host.key.read_text() == KEY_TEXT
    finally:
        os.close(fd)  # releases the lock
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert sealed_key(env, host) == KEY_TEXT
    assert host.key.stat().st_size == 0
