"""atomic_write: old or new content, never a mix, even when the writer is SIGKILLed."""

from __future__ import annotations

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostseal import fsutil as atomic_module
from hostseal.fsutil import AtomicWriteFailed, atomic_write, fsync_dir, remove_stale_temps


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".hostseal-tmp"))


def test_write_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "state.tgz"
    atomic_write(target, b"one")
    assert target.read_bytes() == b"one"
    atomic_write(target, b"two", mode=0o640)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert temps(tmp_path) == []
    fsync_dir(tmp_path)


def test_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        atomic_write(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "a", b"x", mode=0o10000)


def test_failure_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.tgz"
    atomic_write(target, b"old")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(AtomicWriteFailed) as err:
        atomic_write(target, b"new")
    assert err.value.message == (
        f"Could not write {target}: No space left on device. Its previous content is unchanged."
    )
    assert err.value.remedy == f"Check free space and permissions in {tmp_path}, then try again."
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_interrupt_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.tgz"
    atomic_write(target, b"old")

    def interrupted(fd: int, data: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_directory_sync_failure_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic_module, "fsync_dir", broken)
    target = tmp_path / "f"
    with pytest.raises(AtomicWriteFailed) as err:
        atomic_write(target, b"new")
    assert err.value.message.startswith(f"{target} was replaced, but the directory")
    assert target.read_bytes() == b"new"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(AtomicWriteFailed, match="No such file or directory"):
        atomic_write(tmp_path / "missing" / "f", b"x")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_writers_removed(tmp_path: Path) -> None:
    target = tmp_path / "state.tgz"
    dead = tmp_path / f".state.tgz.{_dead_pid()}.00112233.hostseal-tmp"
    alive = tmp_path / f".state.tgz.{os.getppid()}.44556677.hostseal-tmp"
    mine = tmp_path / f".state.tgz.{os.getpid()}.8899aabb.hostseal-tmp"
    other = tmp_path / f".other.{_dead_pid()}.00112233.hostseal-tmp"
    for p in (dead, alive, mine, other):
        p.write_bytes(b"partial")
    assert remove_stale_temps(target) == [dead]
    assert not dead.exists()
    assert alive.exists() and mine.exists() and other.exists()


CHILD = """
import sys
from pathlib import Path
from hostseal.fsutil import atomic_write
target, size, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
atomic_write(target, b"%08d" % start * (size // 8))
print("ready", flush=True)
i = start + 1
while True:
    atomic_write(target, b"%08d" % i * (size // 8))
    i += 1
"""


def test_sigkill_leaves_old_or_new(tmp_path: Path) -> None:
    target = tmp_path / "state.tgz"
    size = 4 << 20
    rng = random.Random(20250301)
    last = -1
    start = 0
    for _round in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(target), str(size), str(start)],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        data = target.read_bytes()
        assert len(data) == size
        version = data[:8]
        assert version.isdigit()
        assert data == version * (size // 8), "the file mixes two versions"
        assert int(version) >= max(last, start)
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        last = int(version)
        start = last + 1000
        # a writer killed mid-write leaves its temporary file; the next writer removes it
    # a later successful write cleans up whatever the killed writers left behind
    atomic_write(target, b"final")
    assert target.read_bytes() == b"final"
    assert temps(tmp_path) == []
