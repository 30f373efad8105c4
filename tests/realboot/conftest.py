"""Real-firmware lab hosts: QEMU, OVMF, swtpm and Debian's signed boot chain.

The tests here boot for real (~30-40 s a boot under TCG): they are marked ``realboot``. They
skip, saying why, when the machine lacks QEMU, OVMF or the image tools, or when the disk image
is not cached and cannot be built (not root); with ``HOSTSEAL_REQUIRE_REALBOOT=1`` (CI) they
fail instead. The disk image is cached in ``HOSTSEAL_LAB_CACHE`` (default
``~/.cache/hostseal/lab``); the first run builds it (~1.5-3 min).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def realboot_unavailable() -> str | None:
    """Why real-firmware hosts cannot run here, or None."""
    from hostseal.lab import realimage, vm

    missing = vm.missing_tools()
    if missing:
        return f"real-firmware lab hosts need {', '.join(missing)} (run ./scripts/setup)"
    if realimage.cached() is None and os.geteuid() != 0:
        return "the lab's disk image is not cached and building it needs root"
    return None


@pytest.fixture(scope="session")
def realboot() -> None:
    """Skip (or, under HOSTSEAL_REQUIRE_REALBOOT, fail) when real boots cannot run here."""
    why = realboot_unavailable()
    if why is not None:
        if os.environ.get("HOSTSEAL_REQUIRE_REALBOOT"):
            pytest.fail(f"real-firmware tests required (HOSTSEAL_REQUIRE_REALBOOT) but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def vm_lab(realboot: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lab directory of the module's own; its VM hosts are removed afterwards."""
    from hostseal.lab import vm

    path = tmp_path_factory.mktemp("vmlab")
    yield path
    for host in vm.list_hosts(path):
        vm.destroy(path, host.name)
