"""The units of the configuration protected in place: the unlock unit mounts the adopted paths
before sshd, libvirtd and the network, stops the boot on a failure and saves at shutdown; the
auto-backup service and its hourly timer. Their commands are run as systemd would run them."""

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
from .test_adopt import Host, host_fixture  # noqa: F401

BOOTBANK = Path("/var/lib/hostseal/bootbank")
TCTI = "device:/dev/tpmrm0"


def parse(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None)  # a key twice is an error
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    return unit


def units() -> dict[str, configparser.ConfigParser]:
    files = bootunit.unit_files("/usr/bin/hostseal", BOOTBANK, TCTI)
    assert sorted(files) == [
        "hostseal-autobackup.service",
        "hostseal-autobackup.timer",
        "hostseal-unlock.service",
    ]
    return {name: parse(text) for name, text in files.items()}


def test_unlock_unit_mounts_before_the_services_and_saves_at_shutdown() -> None:
    unit = units()["hostseal-unlock.service"]
    before = unit["Unit"]["Before"].split()
    for name in ("ssh.service", "sshd.service", "libvirtd.service", "network-pre.target"):
        assert name in before
    assert "network-pre.target" in unit["Unit"]["Wants"].split()
    assert {"local-fs.target", "tpm2.target"} <= set(unit["Unit"]["After"].split())
    assert unit["Unit"]["OnFailure"] == "emergency.target"
    assert unit["Unit"]["OnFailureJobMode"] == "replace-irreversibly"
    # Stopped (so ExecStop saves) at shutdown, although it has no default dependencies.
    assert unit["Unit"]["DefaultDependencies"] == "no"
    assert unit["Unit"]["Conflicts"] == "shutdown.target" and "shutdown.target" in before
    service = unit["Service"]
    assert shlex.split(service["ExecStart"]) == [
        "/usr/bin/hostseal", "--tcti", TCTI, "config", "--bootbank", str(BOOTBANK),
        "unlock", "--mount", "--to", "/run/hostseal/config",
    ]  # fmt: skip
    assert shlex.split(service["ExecStop"]) == [
        "/usr/bin/hostseal", "--tcti", TCTI, "config", "--bootbank", str(BOOTBANK),
        "autobackup", "--live", "/run/hostseal/config",
    ]  # fmt: skip
    assert service["RemainAfterExit"] == "yes" and service["RuntimeDirectoryPreserve"] == "yes"
    assert service["StandardError"] == "journal+console"


def test_autobackup_service_and_hourly_timer() -> None:
    found = units()
    service = found["hostseal-autobackup.service"]
    assert service["Unit"]["Requisite"] == "hostseal-unlock.service"
    assert service["Unit"]["After"] == "hostseal-unlock.service"
    assert service["Service"]["Type"] == "oneshot"
    assert "autobackup" in shlex.split(service["Service"]["ExecStart"])
    timer = found["hostseal-autobackup.timer"]
    assert timer["Timer"]["OnCalendar"] == "hourly"
    assert timer["Timer"]["Unit"] == "hostseal-autobackup.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_install_writes_all_and_systemd_accepts_them(tmp_path: Path) -> None:
    hostseal = str(Path(sys.executable).parent / "hostseal")
    written = bootunit.install(tmp_path, hostseal, BOOTBANK, TCTI)
    units_dir = tmp_path / "etc/systemd/system"
    assert sorted(str(p.relative_to(units_dir)) for p in written) == [
        "hostseal-autobackup.service",
        "hostseal-autobackup.timer",
        "hostseal-unlock.service",
        "sysinit.target.wants/hostseal-unlock.service",
        "timers.target.wants/hostseal-autobackup.timer",
    ]
    if shutil.which("systemd-analyze"):
        names = ["hostseal-unlock.service", "hostseal-autobackup.service"]
        names.append("hostseal-autobackup.timer")
        check = subprocess.run(
            ["systemd-analyze", "verify", *(str(units_dir / n) for n in names)],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr


@pytest.mark.swtpm
def test_the_units_commands_run(env: Env, host: Host) -> None:
    """ExecStop (the shutdown save) and the timer's command, as systemd runs them."""
    hostseal = str(Path(sys.executable).parent / "hostseal")
    files = bootunit.unit_files(hostseal, env.bootbank, env.host.tcti)
    env.ok("config", "adopt", str(host.secrets), "--no-mount")
    stop = shlex.split(parse(files["hostseal-unlock.service"])["Service"]["ExecStop"])
    timer = shlex.split(parse(files["hostseal-autobackup.service"])["Service"]["ExecStart"])
    for argv in (stop, timer):
        argv[argv.index("--live") + 1] = str(host.live)

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        environ = {"HOSTSEAL_EVENTLOG": str(env.host.eventlog), "PATH": "/usr/bin"}
        return subprocess.run(argv, capture_output=True, text=True, env=environ)

    idle = run(timer)
    assert idle.returncode == 0 and "No changes to save." in idle.stdout, idle.stderr
    live = host.live / ".hostseal-adopted" / "root" / str(host.secrets).lstrip("/")
    (live / "vm3.base64").write_text("THIRD\n")
    saved = run(stop)
    assert saved.returncode == 0 and "Changes saved (generation" in saved.stdout, saved.stderr
