"""A real ``hostseal server run`` over TLS on a free 127.0.0.1 port, for tests.

Shared by the server's live tests and the end-to-end fleet tests: tokens for each role are
created on the data directory first, then the server is started as a subprocess and waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hostseal import lab
from hostseal.agent import Agent, AgentConfig, AttestOutcome
from hostseal.lab import LabHost


def hostseal(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the ``hostseal`` command (through ``main()``'s error handling)."""
    return subprocess.run(
        [sys.executable, "-m", "hostseal.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Live:
    url: str
    data: Path
    ca: Path
    admin: str
    viewer: str
    operator: str
    process: subprocess.Popen[str]

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=30)

    def cli(self, token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return hostseal(
            *args,
            "--server",
            self.url,
            "--ca",
            str(self.ca),
            env={"HOSTSEAL_TOKEN": token, "HOSTSEAL_SERVER_DATA": str(self.data)},
        )

    def cli_json(self, token: str, *args: str) -> object:
        done = self.cli(token, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@dataclass
class LabFleet:
    """Lab hosts whose real agents (:class:`hostseal.agent.Agent`) attest to a live service;
    each host keeps its bootbank and agent state under ``root/<name>/``."""

    service: Live
    lab_dir: Path
    root: Path
    hosts: dict[str, LabHost] = field(default_factory=dict)

    def bootbank(self, name: str) -> Path:
        return self.root / name / "bootbank"

    def agent(self, name: str, *, escrow: bool = True) -> Agent:
        host = self.hosts[name] = lab.load(self.lab_dir, name)  # the record as of this boot
        return Agent(
            AgentConfig(
                name=name,
                server=self.service.url,
                ca=self.service.ca,
                tcti=host.tcti,
                eventlog=host.eventlog,
                bootbank=self.bootbank(name),
                state_dir=self.root / name / "agent",
                interval=1,
                escrow=escrow,
            )
        )

    def attest(self, name: str, *, escrow: bool = True) -> AttestOutcome:
        return self.agent(name, escrow=escrow).attest_once()


@contextlib.contextmanager
def live_service(
    data: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[Live]:
    """``args``: more ``server run`` flags (e.g. ``--tls-name`` for a VM guest's address)."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)  # as a first `server run` would
    tokens: dict[str, str] = {}
    for role in ("admin", "operator", "viewer"):
        created = hostseal(
            "server",
            "token",
            "create",
            "--role",
            role,
            "--name",
            role,
            "--data-dir",
            str(data),
            "--json",
        )
        assert created.returncode == 0, created.stderr
        tokens[role] = json.loads(created.stdout)["token"]
    ca_out = hostseal("server", "ca-cert", "--data-dir", str(data))
    assert ca_out.returncode == 0, ca_out.stderr
    ca = Path(ca_out.stdout.strip())
    context = ssl.create_default_context(cafile=str(ca))
    port = free_port()
    log = (data / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostseal.cli",
            "server",
            "run",
            "--data-dir",
            str(data),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        url = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/metrics", verify=context, timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((data / "server.log").read_text()) from None
                time.sleep(0.1)
        yield Live(url, data, ca, tokens["admin"], tokens["viewer"], tokens["operator"], process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    logged = (data / "server.log").read_text()
    assert "Traceback" not in logged, logged
