"""A running demonstration fleet: the attestation service on SQLite and lab hosts whose agents
enrol and attest to it, as separate processes, until stopped.

:class:`DemoFleet` starts (in order) the service (``hostseal server run``), the lab hosts with a
sealed configuration each, enrols and approves them, captures a reference policy from the first
host and assigns it to all, then starts one ``hostseal agent run`` per host. :meth:`hosts`
reads the fleet's state through the REST API; :meth:`stop` ends every process and lab host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostseal import lab
from hostseal.agent import Agent, AgentConfig
from hostseal.client.http import Client, tls_verify
from hostseal.errors import HostsealError
from hostseal.secureconfig import manager
from hostseal.server import localadmin
from hostseal.server.settings import ServerSettings

ROLES = ("admin", "operator", "viewer")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class DemoFleet:
    """The service and ``size`` lab hosts under ``root`` (everything is recreated)."""

    root: Path
    size: int = 3
    interval: int = 10
    port: int = 8443
    prefix: str = "demo"
    tokens: dict[str, str] = field(default_factory=dict)
    ca: Path | None = None
    url: str = ""
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def lab_dir(self) -> Path:
        return self.root / "lab"

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.size + 1)]

    def _settings(self) -> ServerSettings:
        return ServerSettings(data_dir=self.root / "server", bind=f"127.0.0.1:{self.port}")

    # -- starting ------------------------------------------------------------------------
    def start(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, mode=0o700)
        if self.port == 0 or not _port_free(self.port):
            self.port = _free_port()
        settings = self._settings()
        self.tokens = {
            r: localadmin.create_token(settings, role=r, name=f"demo-{r}") for r in ROLES
        }
        self.ca = localadmin.ca_certificate(settings)
        self.url = f"https://127.0.0.1:{self.port}"
        self._spawn(
            "server",
            [
                "server",
                "run",
                "--data-dir",
                str(settings.data_dir),
                "--bind",
                settings.bind,
                "--log-level",
                "warning",
            ],
            {},
        )
        self._wait_for_service()
        operator = self.client("operator")
        for name in self.names:
            host = lab.start(self.lab_dir, name)
            self._seal_configuration(host)
            self._agent(name).enrol()
            operator.call(
                "POST",
                f"/v1/hosts/{name}/approve",
                body={"reason": "demo: lab host, EK checked by hand"},
            )
        # The first host is the known-good one: its verified evidence becomes the policy.
        first, *others = self.names
        self._agent(first).attest_once()
        operator.call(
            "POST",
            "/v1/policies/capture",
            body={"name": "golden", "host": first, "reason": "demo: the known-good host"},
        )
        for name in others:
            operator.call(
                "PUT", f"/v1/hosts/{name}/policy", body={"policy": "golden", "reason": "demo fleet"}
            )
        for name in self.names:
            self._spawn_agent(name)

    def _seal_configuration(self, host: lab.LabHost) -> None:
        config = self.root / host.name / "etc"
        (config / "libvirt").mkdir(parents=True, exist_ok=True)
        (config / "libvirt" / "qemu.conf").write_text('security_driver = "selinux"\n')
        ctx = manager.HostContext(host.tcti, host.eventlog, self.root / host.name / "bootbank")
        manager.save(ctx, [config])

    def _agent_config(self, name: str) -> AgentConfig:
        host = lab.load(self.lab_dir, name)
        assert self.ca is not None
        return AgentConfig(
            name=name,
            server=self.url,
            ca=self.ca,
            tcti=host.tcti,
            eventlog=host.eventlog,
            bootbank=self.root / name / "bootbank",
            state_dir=self.root / name / "agent",
            interval=self.interval,
        )

    def _agent(self, name: str) -> Agent:
        return Agent(self._agent_config(name))

    def _spawn_agent(self, name: str) -> None:
        c = self._agent_config(name)
        env = {
            "HOSTSEAL_TCTI": c.tcti,
            "HOSTSEAL_EVENTLOG": str(c.eventlog),
            "HOSTSEAL_BOOTBANK": str(c.bootbank),
            "HOSTSEAL_AGENT_DIR": str(c.state_dir),
        }
        self._spawn(
            f"agent-{name}",
            [
                "agent",
                "run",
                "--server",
                self.url,
                "--ca",
                str(self.ca),
                "--name",
                name,
                "--interval",
                str(self.interval),
            ],
            env,
        )

    def _spawn(self, label: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.root / f"{label}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "hostseal.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        log.close()
        self._processes.append(process)

    def _wait_for_service(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client("viewer").call("GET", "/v1/hosts")
                return
            except HostsealError:
                server = self._processes[0]
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                    raise HostsealError(
                        f"The attestation service did not start: {log}",
                        f"See {self.root / 'server.log'}.",
                    ) from None
                time.sleep(0.2)

    # -- using and stopping --------------------------------------------------------------
    def client(self, role: str) -> Client:
        assert self.ca is not None
        return Client(self.url, self.tokens[role], tls_verify(self.ca, self.url))

    def hosts(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.client("viewer").call("GET", "/v1/hosts")
        return data

    def stop(self) -> None:
        for process in reversed(self._processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()
        for host in lab.list_hosts(self.lab_dir):
            lab.stop(self.lab_dir, host.name)
