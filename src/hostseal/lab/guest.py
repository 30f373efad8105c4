"""Reaching into a running real-firmware lab host: commands and files over SSH (the lab's key,
through the forwarded port), the serial console (read from its log, typed on its socket), and
waiting for either -- always with a timeout, failing with the console's last lines."""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hostseal.lab.vmhost import VmError, VmHost, current

#: Seconds to wait for a boot (cold boots take 30-40 s; under heavy load much longer).
BOOT_TIMEOUT = 180.0


@dataclass(frozen=True)
class RunResult:
    """What a command run in the guest returned."""

    rc: int
    stdout: str
    stderr: str


# -- SSH -------------------------------------------------------------------------------------


def ssh_public_key(host: VmHost) -> str:
    key = host.ssh_key
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostseal-lab", "-f", str(key)],
            capture_output=True,
            check=True,
        )
    key.chmod(0o600)
    return Path(f"{key}.pub").read_text()


def ssh_args(host: VmHost, connect_timeout: int = 10) -> list[str]:
    return [
        "ssh",
        "-i",
        str(host.ssh_key),
        "-p",
        str(current(host).ssh_port),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "root@127.0.0.1",
    ]


def run_on(
    host: VmHost, command: str, *, timeout: float = 120.0, stdin: bytes | None = None
) -> RunResult:
    """Run a shell command in the guest over SSH; rc 255 means SSH itself failed."""
    out = _run_bytes(host, command, timeout=timeout, stdin=stdin)
    return RunResult(
        out.returncode, out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace")
    )


def _run_bytes(
    host: VmHost, command: str, *, timeout: float, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    if not host.running:
        raise VmError(f"Lab host {host.name!r} is not running.", f"hostseal lab start {host.name}")
    try:
        return subprocess.run(
            [*ssh_args(host), command],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise VmError(
            f"The command on lab host {host.name!r} did not finish in {timeout:.0f} s: {command}",
            f"Look at its console: hostseal lab console {host.name}",
        ) from None


def read_file(host: VmHost, remote: str, timeout: float = 60.0) -> bytes:
    """The bytes of a file in the guest."""
    out = _run_bytes(host, f"cat {shlex.quote(remote)}", timeout=timeout)
    if out.returncode != 0:
        raise VmError(
            f"Cannot read {remote} on lab host {host.name!r}: "
            f"{out.stderr.decode(errors='replace').strip()}",
            "Check that the file exists in the guest.",
        )
    return out.stdout


def copy_in(host: VmHost, local: Path, remote: str, mode: int = 0o644) -> None:
    """Copy a file from this machine into the guest."""
    out = _run_bytes(
        host,
        f"cat > {shlex.quote(remote)} && chmod {mode:o} {shlex.quote(remote)}",
        timeout=300,
        stdin=local.read_bytes(),
    )
    if out.returncode != 0:
        raise VmError(
            f"Cannot copy {local} to {remote} on lab host {host.name!r}: "
            f"{out.stderr.decode(errors='replace').strip()}",
            "Check that the directory exists in the guest and has room.",
        )


def host_keys(host: VmHost) -> str:
    """The guest's SSH host public keys, as ``ssh-keyscan`` sees them through the port."""
    out = subprocess.run(
        ["ssh-keyscan", "-p", str(current(host).ssh_port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return "".join(sorted(line + "\n" for line in out.stdout.splitlines() if line.strip()))


# -- the console -----------------------------------------------------------------------------


def console(host: VmHost, *, all_boots: bool = False) -> str:
    """What the serial console printed during the current boot (or all boots); ``host`` may
    be a record from before the last reboot."""
    try:
        with open(host.console_log, "rb") as f:
            f.seek(0 if all_boots else current(host).console_offset)
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode(errors="replace").replace("\r", "")


def _tail(host: VmHost, lines: int = 25) -> str:
    text = _ANSI.sub("", console(host))
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(nothing on the console)"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def type_line(host: VmHost, line: str) -> None:
    """Type ``line`` and Enter on the serial console (e.g. at the emergency shell)."""
    if not host.running:
        raise VmError(f"Lab host {host.name!r} is not running.", f"hostseal lab start {host.name}")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(host.serial_socket))
        s.sendall(line.encode() + b"\r")
        time.sleep(0.2)  # let QEMU take it before the connection goes


def _wait(host: VmHost, what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if not host.running:
            raise VmError(
                f"Lab host {host.name!r} stopped while waiting for {what}. "
                f"Its console ends with:\n{_tail(host)}",
                f"See {host.console_log} and {host.path / 'qemu.log'}.",
            )
        if time.monotonic() > deadline:
            raise VmError(
                f"Lab host {host.name!r}: no {what} after {timeout:.0f} s. "
                f"Its console ends with:\n{_tail(host)}",
                f"See {host.console_log}; a loaded machine boots slower: wait longer.",
            )
        time.sleep(1)


def console_text(host: VmHost) -> str:
    """The current boot's console without terminal escape sequences: what
    :func:`wait_console` searches (its length is a ``since`` for the next wait)."""
    return _ANSI.sub("", console(host))


def wait_console(
    host: VmHost, pattern: str, timeout: float = BOOT_TIMEOUT, *, since: int = 0
) -> re.Match[str]:
    """Wait until the current boot's console (from position ``since`` of
    :func:`console_text`) matches the regular expression ``pattern``."""
    regex = re.compile(pattern)
    found: list[re.Match[str]] = []

    def ready() -> bool:
        match = regex.search(console_text(host), since)
        if match:
            found.append(match)
        return match is not None

    _wait(host, f"console output matching {pattern!r}", ready, timeout)
    return found[0]


def wait_ssh(host: VmHost, timeout: float = BOOT_TIMEOUT) -> None:
    """Wait until the guest's sshd lets the lab in."""

    def ready() -> bool:
        with contextlib.suppress(subprocess.TimeoutExpired):
            out = subprocess.run(
                [*ssh_args(host, connect_timeout=5), "true"],
                capture_output=True,
                timeout=15,
                check=False,
            )
            return out.returncode == 0
        return False

    _wait(host, "SSH login", ready, timeout)


#: What systemd's emergency mode prints before it opens the shell (sulogin's prompt).
EMERGENCY_PROMPT = r"Press Enter for maintenance"


def enter_emergency_shell(host: VmHost, timeout: float = BOOT_TIMEOUT) -> None:
    """Wait for the emergency mode's prompt on the console, press Enter, wait for the root
    shell (root is locked; the lab's image lets sulogin open the shell without a password)."""
    wait_console(host, EMERGENCY_PROMPT, timeout)
    since = len(console_text(host))
    type_line(host, "")
    wait_console(host, r"root@[\w.-]+:[^\n]*# ", 30, since=since)


def console_run(host: VmHost, command: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``command`` at a root shell on the console (e.g. the emergency shell); return its
    exit status and what it printed (terminal output: lines may be wrapped or mixed with
    kernel messages)."""
    nonce = secrets.token_hex(4)
    since = len(console_text(host))
    # the marker as typed ("_") differs from the marker as printed, so the echo never matches
    type_line(host, f'{command}; echo "__done_{nonce}""_$?"')
    match = wait_console(host, rf"__done_{nonce}_(\d+)", timeout, since=since)
    lines = console_text(host)[since : match.start()].splitlines()
    output = "\n".join(line for line in lines if nonce not in line)
    return int(match.group(1)), output.strip("\n")
