"""swtpm processes, shared by lab hosts (:mod:`hostseal.lab`) and vTPMs (:mod:`hostseal.vtpm`):
finding the programs, choosing ports, recognising a live swtpm and stopping it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from hostseal.errors import HostsealError

INSTALL_REMEDY = "Install it: sudo apt-get install swtpm swtpm-tools (or run ./scripts/setup)."


class SwtpmMissing(HostsealError):
    """swtpm or swtpm_setup is not installed."""


def require(tool: str, needed_for: str = "software TPMs") -> str:
    """The path of ``tool`` (swtpm, swtpm_setup, ...), or a clear error."""
    found = shutil.which(tool)
    if found is None:
        raise SwtpmMissing(f"{tool} is not installed; {needed_for} need swtpm.", INSTALL_REMEDY)
    return found


def port_pair_free(port: int) -> bool:
    """Whether ``port`` and ``port + 1`` can both be bound on 127.0.0.1 now."""
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def free_port_pair() -> tuple[int, int]:
    """Two adjacent free ports: the swtpm TCTI finds the control channel at port + 1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a:
            a.bind(("127.0.0.1", 0))
            port: int = a.getsockname()[1]
        if port < 65535 and port_pair_free(port):
            return port, port + 1
    raise HostsealError(
        "No two adjacent free TCP ports on 127.0.0.1 for swtpm.", "Free some ports."
    )


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon's parent, init, may reap late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def pid_of(pidfile: Path, state_dir: Path) -> int | None:
    """The pid in ``pidfile`` if that process is a live swtpm serving ``state_dir`` (checked
    against its command line, so a reused pid is never taken for it)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"swtpm" not in cmdline or f"dir={state_dir}\0".encode() not in cmdline + b"\0":
        return None
    return pid if alive(pid) else None


def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.005)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
