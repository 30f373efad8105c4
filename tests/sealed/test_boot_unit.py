"""Boot integration, as far as it can be tested without booting systemd: the unit is valid for
systemd, and the very command it runs exits 3 (failing the unit, so OnFailure stops the boot in
the emergency target) on a security violation and 0 on a good boot."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hostseal.secureconfig import bootunit

from .conftest import Env

pytestmark = pytest.mark.swtpm


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit


def test_unit_is_valid_and_stops_boot_on_violation(env: Env, tmp_path: Path) -> None:
    root = tmp_path / "root"
    hostseal = str(Path(sys.executable).parent / "hostseal")
    written = bootunit.install(root, hostseal, env.bootbank, env.host.tcti)
    unit_path = root / "etc/systemd/system/hostseal-unlock.service"
    assert written[:2] == [
        unit_path,
        root / "etc/systemd/system/sysinit.target.wants" / unit_path.name,
    ]
    assert written[1].resolve() == unit_path.resolve()
    unit = read_unit(unit_path)
    assert unit["Unit"]["OnFailure"] == "emergency.target"
    assert unit["Unit"]["DefaultDependencies"] == "no"
    assert "libvirtd.service" in unit["Unit"]["Before"]
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Install"]["WantedBy"] == "sysinit.target"
    if shutil.which("systemd-analyze"):
        check = subprocess.run(
            ["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr

    # Run the unit's own command line, with /run/hostseal replaced by a tmpfs scratch dir.
    argv = shlex.split(unit["Service"]["ExecStart"])
    to = argv.index("--to") + 1
    assert argv[to] == "/run/hostseal/config"
    env.ok("config", "save", "--from", str(env.config))

    def boot_unlock() -> subprocess.CompletedProcess[str]:
        argv[to] = str(env.target())
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={"HOSTSEAL_EVENTLOG": str(env.host.eventlog), "PATH": "/usr/bin"},
        )

    good = boot_unlock()
    assert good.returncode == 0, good.stderr
    env.reboot(secure_boot=False)
    argv[argv.index("--tcti") + 1] = env.host.tcti  # the lab host's swtpm moved ports
    bad = boot_unlock()
    assert bad.returncode == 3
    assert "A security violation was detected." in bad.stderr
