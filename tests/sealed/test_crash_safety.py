"""A save killed at any moment leaves a bootbank that unlocks, to the old or the new content."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Env
from .test_sealed_config import same_tree

pytestmark = pytest.mark.swtpm

KILL_POINTS = 24


def test_save_killed_at_many_points_always_unlocks(env: Env) -> None:
    env.ok("config", "save", "--from", str(env.config))
    hostseal = [sys.executable, "-m", "hostseal.cli"]
    child_env = {**os.environ}
    versions = [env.bootbank.parent / "v0", env.bootbank.parent / "v1"]
    for n, version in enumerate(versions):
        shutil.copytree(env.config, version / env.config.name)
        (version / env.config.name / "version").write_text(f"generation content {n}\n")

    def save(version: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*hostseal, "config", "save", "--from", str(version / env.config.name)],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    start = time.monotonic()
    assert save(versions[0]).wait() == 0
    duration = time.monotonic() - start
    contents = {0}
    killed_mid_way = 0
    for point in range(KILL_POINTS):
        version = (point + 1) % 2
        proc = save(versions[version])
        time.sleep(duration * 1.3 * point / KILL_POINTS)  # some kills come too late
        proc.send_signal(signal.SIGKILL)
        if proc.wait() == -signal.SIGKILL:
            killed_mid_way += 1
        target = env.target()
        env.ok("config", "unlock", "--to", str(target))
        text = (target / env.config.name / "version").read_text()
        got = int(text.split()[-1])
        assert any(same_tree(v / env.config.name, target / env.config.name) for v in versions)
        contents.add(got)
    assert killed_mid_way >= KILL_POINTS // 2
    # Some kills landed after the new generation was in place: both contents were seen.
    assert contents == {0, 1}
    # And a save after all this works and leaves no transition files behind.
    env.ok("config", "save", "--from", str(versions[1] / env.config.name))
    assert sorted(p.name for p in env.bootbank.iterdir()) == ["state.tgz"]
