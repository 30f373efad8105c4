"""The wheel: built from a copy of the source with pip, installed into a fresh virtual
environment with its dependencies, its ``hostseal --version`` runs. Slow (dependencies come
from the package index): marked ``package``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hostseal import __version__

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.package


def copy_source(to: Path) -> Path:
    """What the wheel is built from, copied (building in the tree would write build/ there)."""
    to.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, to / name)
    shutil.copytree(
        REPO / "src", to / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return to


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    source = copy_source(tmp_path / "source")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", str(source), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "deprecated" not in built.stdout + built.stderr  # e.g. project.license as a table
    (wheel,) = tmp_path.glob("hostseal-*.whl")
    assert wheel.name == f"hostseal-{__version__}-py3-none-any.whl"

    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    version = subprocess.run(
        [str(venv / "bin/hostseal"), "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"hostseal, version {__version__}\n"
    # the data files the service and the doctor read at run time are in the wheel
    site = next((venv / "lib").glob("python3*/site-packages/hostseal"))
    assert len(list(site.glob("doctor/kb/*.toml"))) > 10
    assert (site / "server/http/web/templates/base.html").is_file()
