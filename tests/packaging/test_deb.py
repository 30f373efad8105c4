"""The Debian package built by scripts/build-deb (dh-virtualenv): what ``dpkg-deb`` shows of it
-- the command, the units naming /usr/bin/hostseal (the same text the code makes), the conffile,
man pages, bash completion, Depends -- and the packaged virtual environment running from an
unpacked copy. Slow the first time (about a minute and a half; then cached by the source's
hash): marked ``package``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hostseal import __version__, systemd
from hostseal.client.defaults import DEFAULT_SERVER_DATA
from hostseal.secureconfig import bootunit
from hostseal.settings import DEFAULT_BOOTBANK

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.package,
    pytest.mark.skipif(
        shutil.which("dh_virtualenv") is None or shutil.which("dpkg-buildpackage") is None,
        reason="needs the Debian packages dh-virtualenv and dpkg-dev",
    ),
]


@pytest.fixture(scope="module")
def deb() -> Path:
    done = subprocess.run(
        [str(REPO / "scripts/build-deb")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (REPO / "dist").glob(f"hostseal_{__version__}-*_amd64.deb")
    return path


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    dpkg_deb("-x", str(deb), str(root))
    dpkg_deb("-e", str(deb), str(root / "DEBIAN"))
    return root


def test_the_package_holds_the_command_man_pages_and_completion(deb: Path) -> None:
    listing = dpkg_deb("-c", str(deb))
    assert "./usr/bin/hostseal -> /opt/venvs/hostseal/bin/hostseal" in listing
    for path in (
        "./opt/venvs/hostseal/bin/hostseal",
        "./etc/hostseal/hostseal.toml",
        "./usr/share/man/man1/hostseal.1.gz",
        "./usr/share/man/man1/hostseal-agent.1.gz",
        "./usr/share/man/man1/hostseal-config.1.gz",
        "./usr/share/man/man1/hostseal-agent-run.1.gz",
        "./usr/share/bash-completion/completions/hostseal",
        "./lib/systemd/system/hostseal-agent.service",
        "./lib/systemd/system/hostseal-server.service",
        "./lib/systemd/system/hostseal-unlock.service",
        "./lib/systemd/system/hostseal-autobackup.service",
        "./lib/systemd/system/hostseal-autobackup.timer",
    ):
        assert f" {path}\n" in listing or f" {path} ->" in listing, path


def test_depends_names_the_tss_libraries_and_not_swtpm(deb: Path) -> None:
    depends = dpkg_deb("-f", str(deb), "Depends")
    names = {part.strip().split(" ")[0] for part in depends.split(",")}
    assert {"libtss2-esys-3.0.2-0", "libtss2-tctildr0", "libtss2-tcti-device0"} <= names
    assert "python3" in names
    assert not any("swtpm" in name for name in names)


def test_the_units_are_the_codes_text_naming_usr_bin_hostseal(unpacked: Path) -> None:
    units = unpacked / "lib/systemd/system"
    assert (units / systemd.AGENT_UNIT).read_text() == systemd.agent_unit(
        "/usr/bin/hostseal", None, None, None
    )
    assert (units / systemd.SERVER_UNIT).read_text() == systemd.server_unit(
        "/usr/bin/hostseal", DEFAULT_SERVER_DATA, None
    )
    boot = bootunit.unit_files("/usr/bin/hostseal", DEFAULT_BOOTBANK, None)
    assert set(boot) >= {bootunit.UNIT_NAME, bootunit.AUTOBACKUP_SERVICE, bootunit.AUTOBACKUP_TIMER}
    for name, text in boot.items():
        assert (units / name).read_text() == text
    assert len(list(units.iterdir())) == 2 + len(boot)
    for unit in units.glob("*.service"):
        starts = [line for line in unit.read_text().splitlines() if line.startswith("Exec")]
        assert starts and all(s.split("=", 1)[1].startswith("/usr/bin/hostseal ") for s in starts)


def test_the_config_file_is_a_conffile_and_nothing_is_enabled_or_started(
    unpacked: Path,
) -> None:
    assert (unpacked / "DEBIAN/conffiles").read_text().split() == ["/etc/hostseal/hostseal.toml"]
    assert (unpacked / "etc/hostseal/hostseal.toml").read_text() == (
        REPO / "packaging/hostseal.toml"
    ).read_text()
    postinst = (unpacked / "DEBIAN/postinst").read_text()
    invoked = [line.split()[1] for line in postinst.splitlines() if "deb-systemd-invoke" in line]
    assert invoked == ["try-restart"]  # after an upgrade, what was running; nothing started
    for script in ("preinst", "prerm"):  # an upgrade does not stop the units either
        path = unpacked / "DEBIAN" / script
        assert not path.exists() or "deb-systemd-invoke stop" not in path.read_text()
    enables = [line.strip() for line in postinst.splitlines() if "helper enable" in line]
    assert enables and all("was-enabled" in p for p in _guards(postinst, enables))
    assert not (unpacked / "etc/systemd/system").exists()


def _guards(script: str, lines: list[str]) -> list[str]:
    """The line before each of ``lines`` (the condition it runs under)."""
    text = [line.strip() for line in script.splitlines()]
    return [text[text.index(line) - 2] for line in lines]


def test_the_packaged_venv_runs_and_completion_and_man_pages_are_clicks(unpacked: Path) -> None:
    venv = unpacked / "opt/venvs/hostseal"
    assert (venv / "bin/python3").resolve() == Path("/usr/bin/python3").resolve()
    done = subprocess.run(
        [str(venv / "bin/python"), "-m", "hostseal.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"hostseal, version {__version__}\n"
    script = (unpacked / "usr/share/bash-completion/completions/hostseal").read_text()
    assert "_HOSTSEAL_COMPLETE=bash_complete" in script
    assert "complete -o nosort -F _hostseal_completion hostseal" in script
    man = subprocess.run(
        ["zcat", str(unpacked / "usr/share/man/man1/hostseal-agent-run.1.gz")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert man.startswith('.TH "HOSTSEAL AGENT RUN" "1"')
    assert "\\-\\-server" in man


def test_a_second_build_of_the_same_source_is_the_cached_one(deb: Path) -> None:
    before = _hash()
    stamp = Path(f"{deb}.source-sha256").read_text().strip()
    done = subprocess.run(
        [str(REPO / "scripts/build-deb")], capture_output=True, text=True, check=True
    )
    if _hash() != before or stamp != before:  # someone edited src/ meanwhile (a shared tree)
        pytest.skip("the source changed while the test ran: the cache rightly rebuilt")
    assert done.stdout.strip() == f"build-deb: dist/{deb.name} is up to date (source {before})"


def _hash() -> str:
    return subprocess.run(
        [str(REPO / "scripts/build-deb"), "--hash"], capture_output=True, text=True, check=True
    ).stdout.strip()
