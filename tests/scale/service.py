"""Several real ``hostseal server run`` processes (TLS, 127.0.0.1, free ports) on one database and
one data directory (shared server key and TLS material), to start, kill and start again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from _service import free_port, hostseal
from scale.fleet import Fleet, SimHost, enrol_all


class Instance:
    def __init__(self, service: Service, number: int) -> None:
        self.service = service
        self.number = number
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = service.data / f"instance{number}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        command = [sys.executable, "-m", "hostseal.cli", "server", "run", "--data-dir",
                   str(self.service.data), "--bind", f"127.0.0.1:{self.port}",
                   "--log-level", "warning"]  # fmt: skip
        if self.service.db_url:
            command += ["--db", self.service.db_url]
        env = {**os.environ, "HOSTSEAL_SERVER_INSTANCE": f"instance{self.number}",
               **self.service.env}  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        context = ssl.create_default_context(cafile=str(self.service.ca))
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{self.url}/metrics", verify=context, timeout=2)
                return
            except httpx.HTTPError:
                assert self.process is not None
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(self.log.read_text()) from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: as a crash or a power loss of the instance's machine."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


class Service:
    """``count`` instances; ``db_url`` None means the data directory's SQLite file."""

    def __init__(
        self, data: Path, db_url: str | None, count: int, env: dict[str, str] | None = None
    ) -> None:
        self.data = data
        self.db_url = db_url
        # a simulated fleet enrols from one address: no per-address enrolment rate here
        self.env = {"HOSTSEAL_SERVER_ENROL_PER_MINUTE": "1000000", **(env or {})}
        data.mkdir(parents=True, exist_ok=True, mode=0o700)  # the server refuses a looser one
        db = ["--db", db_url] if db_url else []
        self.tokens: dict[str, str] = {}
        for role in ("admin", "operator", "viewer"):
            created = hostseal("server", "token", "create", "--role", role, "--name", role,
                               "--data-dir", str(data), *db, "--json")  # fmt: skip
            assert created.returncode == 0, created.stderr
            self.tokens[role] = json.loads(created.stdout)["token"]
        ca = hostseal("server", "ca-cert", "--data-dir", str(data))
        assert ca.returncode == 0, ca.stderr
        self.ca = Path(ca.stdout.strip())
        self.instances = [Instance(self, n) for n in range(1, count + 1)]

    def start(self) -> Service:
        for instance in self.instances:
            instance.start(wait=False)
        for instance in self.instances:
            instance.wait_ready()
        return self

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.instances]

    def http(self, number: int = 0, role: str = "viewer") -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.urls[number], verify=context, headers=headers, timeout=30)

    def close(self) -> None:
        for instance in self.instances:
            instance.stop()

    def logs(self) -> str:
        return "\n".join(i.log.read_text() for i in self.instances if i.log.exists())


def prepare(service: Service, hosts: list[SimHost], db_url: str) -> None:
    """Enrol every host through the API (MakeCredential / ActivateCredential), approve them all
    (one UPDATE: the API does it one by one) and assign them a policy captured from the first."""

    async def go() -> None:
        fleet = Fleet(service.urls, service.ca)
        await enrol_all(fleet, hosts)
        engine = create_engine(db_url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE hosts SET status = 'enrolled'"))
        await fleet.attest(hosts[0], 0)
        with service.http(role="operator") as client:
            response = client.post(
                "/v1/policies/capture",
                json={"name": "gold", "host": hosts[0].name, "reason": "scale"},
            )
            assert response.status_code == 200, response.text
        with engine.begin() as connection:
            connection.execute(text("UPDATE hosts SET policy_name = 'gold'"))
        engine.dispose()
        assert await fleet.attest(hosts[-1], 0) == "Passed"
        await fleet.close()

    asyncio.run(go())
