"""The host side never loads the service: the agent, the client and key release import nothing
of :mod:`hostseal.server` (the wire models live in :mod:`hostseal.client`, the server imports
them from there)."""

from __future__ import annotations

import subprocess
import sys

HOST_SIDE = (
    "hostseal.agent",
    "hostseal.client",
    "hostseal.client.http",
    "hostseal.client.transport",
    "hostseal.client.wire",
    "hostseal.keyprovider",
    "hostseal.keyprovider.release",
    "hostseal.cli.admin",
)


def test_the_host_side_imports_nothing_of_the_server() -> None:
    code = (
        f"import importlib, sys\n"
        f"for name in {HOST_SIDE!r}:\n"
        f"    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[:2] == ['hostseal', 'server']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_key_release_calls_the_client_only_when_asked() -> None:
    """Key providers are used without release: importing them loads no HTTP client."""
    code = (
        "import sys, hostseal.keyprovider\n"
        "print(sorted(m for m in ('httpx', 'pydantic', 'hostseal.client.http') "
        "if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
