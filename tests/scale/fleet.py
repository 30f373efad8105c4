"""Simulated agents for load tests and benchmarks: software TPM keys, evidence pre-computed except
the signature over the server's nonce, real HTTPS to one or several ``hostseal server`` instances,
retries with backoff and fail-over to another instance, as the real agent does.

Every host shares one measured boot (the lab firmware's event log and PCRs) but has its own EK and
AK, enrols through the API (MakeCredential / ActivateCredential) and gets its own agent token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from server._softtpm import ECDSA, SHA256, SoftTpm, b2


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class SimTpm(SoftTpm):
    """A SoftTpm that takes its boot (event log, PCRs) instead of simulating one per host."""

    def __post_init__(self) -> None:
        pass


@dataclass
class SimHost:
    name: str
    tpm: SimTpm
    token: str = ""
    pcr_json: dict[str, dict[str, str]] = field(default_factory=dict)
    eventlog_b64: str = ""

    def evidence(self, nonce_hex: str, pcrs: list[int]) -> dict[str, Any]:
        """The evidence for a challenge: only the quote's signature is computed here."""
        nonce = bytes.fromhex(nonce_hex)
        bitmap = bytearray(3)
        for index in pcrs:
            bitmap[index // 8] |= 1 << (index % 8)
        values = [self.tpm.pcrs["sha256"][i] for i in sorted(pcrs)]
        attest = (
            struct.pack(">IH", 0xFF544347, 0x8018)
            + b2(self.tpm.ak_name)
            + b2(nonce)
            + struct.pack(">QIIB", 123456, 3, 0, 1)
            + struct.pack(">Q", 0x0002000100000000)
            + struct.pack(">IHB", 1, SHA256, 3)
            + bytes(bitmap)
            + b2(hashlib.sha256(b"".join(values)).digest())
        )
        r, s = decode_dss_signature(self.tpm.ak.sign(attest, ec.ECDSA(hashes.SHA256())))
        signature = struct.pack(">HH", ECDSA, SHA256) + b2(r.to_bytes(32, "big"))
        signature += b2(s.to_bytes(32, "big"))
        return {
            "nonce": nonce_hex,
            "quote": b64(attest),
            "signature": b64(signature),
            "pcrs": {"sha256": {str(i): self.pcr_json["sha256"][str(i)] for i in pcrs}},
            "eventlog": self.eventlog_b64,
            "secure_config": None,
        }


def make_hosts(count: int, prefix: str = "sim") -> list[SimHost]:
    """``count`` hosts with their own keys and one shared (lab firmware) boot."""
    boot = SoftTpm()
    pcr_json = {"sha256": {str(i): v.hex() for i, v in boot.pcrs["sha256"].items()}}
    eventlog = b64(boot.eventlog)
    return [
        SimHost(
            f"{prefix}{n:05d}",
            SimTpm(eventlog=boot.eventlog, pcrs=boot.pcrs),
            pcr_json=pcr_json,
            eventlog_b64=eventlog,
        )
        for n in range(count)
    ]


@dataclass
class Outcome:
    accepted: int = 0
    failed: int = 0  # gave up after the retries
    ambiguous: int = 0  # evidence sent, no answer (the verdict may or may not be stored)
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    per_host: dict[str, int] = field(default_factory=dict)
    ambiguous_per_host: dict[str, int] = field(default_factory=dict)

    def note(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Fleet:
    """Agents talking HTTPS to ``urls`` (instances of one service); each agent starts at its own
    instance (``hash(name) % len(urls)``) and moves to the next one when a request fails."""

    def __init__(self, urls: list[str], ca: Path, *, connections: int = 64) -> None:
        self.urls = urls
        context = ssl.create_default_context(cafile=str(ca))
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.clients = [
            httpx.AsyncClient(base_url=url, verify=context, limits=limits, timeout=30)
            for url in urls
        ]
        self.outcome = Outcome()

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def _post(self, start: int, path: str, token: str | None, body: Any) -> httpx.Response:
        """POST with retries (backoff 50 ms doubling to 2 s, jitter), moving to the next instance
        after a transport error or a 5xx; gives up after 12 tries."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        delay = 0.05
        for attempt in range(12):
            client = self.clients[(start + attempt) % len(self.clients)]
            try:
                response = await client.post(path, json=body, headers=headers)
                if response.status_code < 500:
                    return response
                self.outcome.note(f"{path} {response.status_code}")
            except httpx.TransportError as exc:
                self.outcome.note(f"{path} {type(exc).__name__}")
                if path.endswith("/evidence"):
                    self.outcome.ambiguous += 1
            self.outcome.retries += 1
            await asyncio.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
        raise RuntimeError(f"{path}: no instance answered after 12 tries")

    async def enrol(self, host: SimHost, index: int = 0) -> None:
        started = await self._post(
            index,
            "/v1/enrol/start",
            None,
            {
                "name": host.name,
                "ek_public": b64(host.tpm.ek_public),
                "ek_certificate": None,
                "ak_public": b64(host.tpm.ak_public),
            },
        )
        assert started.status_code == 200, started.text
        body = started.json()
        secret = host.tpm.activate(
            base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
        )
        finished = await self._post(
            index,
            "/v1/enrol/finish",
            None,
            {"enrolment_id": body["enrolment_id"], "secret": b64(secret)},
        )
        assert finished.status_code == 200, finished.text
        host.token = finished.json()["agent_token"]

    async def attest(self, host: SimHost, index: int, *, alternate: bool = False) -> str:
        """One attestation: challenge, then evidence (to the next instance with ``alternate``),
        a new challenge when the nonce was refused (409: consumed by a try that got no answer).
        Returns the verdict's status."""
        began = time.perf_counter()
        for _ in range(5):
            challenge = await self._post(index, "/v1/attest/challenge", host.token, {})
            if challenge.status_code != 200:
                raise RuntimeError(f"challenge refused: {challenge.text}")
            data = challenge.json()
            evidence = host.evidence(data["nonce"], data["pcrs"])
            unanswered = self.outcome.ambiguous
            answer = await self._post(
                index + 1 if alternate else index, "/v1/attest/evidence", host.token, evidence
            )
            if self.outcome.ambiguous != unanswered:
                more = self.outcome.ambiguous - unanswered
                self.outcome.ambiguous_per_host[host.name] = (
                    self.outcome.ambiguous_per_host.get(host.name, 0) + more
                )
            if answer.status_code == 409:
                self.outcome.note(f"evidence 409 {answer.json().get('error')}")
                continue
            if answer.status_code != 200:
                raise RuntimeError(f"evidence refused ({answer.status_code}): {answer.text}")
            self.outcome.accepted += 1
            self.outcome.per_host[host.name] = self.outcome.per_host.get(host.name, 0) + 1
            self.outcome.latencies.append(time.perf_counter() - began)
            status: str = answer.json()["status"]
            return status
        raise RuntimeError("five challenges refused in a row")

    async def safe_attest(self, host: SimHost, index: int, *, alternate: bool = False) -> None:
        try:
            await self.attest(host, index, alternate=alternate)
        except Exception as exc:
            self.outcome.failed += 1
            self.outcome.note(f"gave up: {exc}"[:120])


async def enrol_all(fleet: Fleet, hosts: list[SimHost], concurrency: int = 32) -> None:
    queue = list(enumerate(hosts))

    async def worker() -> None:
        while queue:
            index, host = queue.pop()
            await fleet.enrol(host, index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def closed_loop(
    fleet: Fleet, hosts: list[SimHost], *, concurrency: int, duration: float, alternate: bool
) -> float:
    """``concurrency`` agents attest back to back for ``duration`` s; the seconds taken."""
    deadline = time.perf_counter() + duration
    start = time.perf_counter()
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            host = hosts[n % len(hosts)]
            await fleet.safe_attest(host, n, alternate=alternate)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def open_loop(
    fleet: Fleet, hosts: list[SimHost], *, rate: float, duration: float, max_in_flight: int = 512
) -> tuple[float, int]:
    """Attestations started at ``rate`` per second (host after host) for ``duration`` s, each in
    its own task, as a fleet on a fixed interval does; (seconds, attestations started)."""
    start = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    started = 0
    while True:
        due = int((time.perf_counter() - start) * rate)
        if time.perf_counter() - start >= duration:
            break
        while started < due and len(tasks) < max_in_flight:
            task = asyncio.create_task(fleet.safe_attest(hosts[started % len(hosts)], started))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            started += 1
        await asyncio.sleep(0.005)
    if tasks:
        await asyncio.gather(*tasks)
    return time.perf_counter() - start, started
