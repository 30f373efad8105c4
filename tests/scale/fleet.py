"""Simulated agents for load tests and benchmarks: software TPM keys, evidence pre-computed except
the signature over the server's nonce, real HTTPS to one or several ``hostseal server`` instances,
retries with backoff and fail-over to another instance, as the real agent does.

Every host shares one measured boot (the lab firmware's event log and PCRs) but has its own EK and
AK, enrols through the API (MakeCredential / ActivateCredential) and gets its own agent token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import random
import re
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hostseal.client.wire import EnrolFinish, EnrolStart, EvidenceIn, b64
from scale._http import Pool, Response, TransportError
from server._softtpm import ECDSA, SHA256, SoftTpm, b2


def _use_uvloop() -> None:
    """uvloop's event loop for the ``asyncio.run()`` calls of the benchmarks, when it is installed
    (it is not a dependency) and no other loop policy was chosen. Not under pytest: a policy is
    process-wide, and the client's tests choose their loops themselves."""
    if "pytest" in sys.modules:
        return
    try:
        import uvloop
    except ImportError:
        return
    if type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


_use_uvloop()


def _b64(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


_SIGN = ec.ECDSA(hashes.SHA256())
_SIGNATURE_HEAD = struct.pack(">HH", ECDSA, SHA256)
# TPMS_ATTEST after the nonce: clock info, firmware version, TPMS_QUOTE_INFO's selection count,
# hash and size of select (the bitmap and the PCR digest follow, per PCR selection)
_ATTEST_MIDDLE = (
    struct.pack(">QIIB", 123456, 3, 0, 1)
    + struct.pack(">Q", 0x0002000100000000)
    + struct.pack(">IHB", 1, SHA256, 3)
)


class SimTpm(SoftTpm):
    """A SoftTpm that takes its boot (event log, PCRs) instead of simulating one per host."""

    def __post_init__(self) -> None:
        pass


# the per-request values in an evidence template (the ticket is any JSON, so with its quotes)
_NONCE, _QUOTE, _SIGNATURE, _TICKET = "@nonce@", "@quote@", "@signature@", "@ticket@"
_SLOTS = re.compile(rb'("@ticket@"|@nonce@|@quote@|@signature@)')


def evidence_model(
    nonce: str,
    quote: str,
    signature: str,
    pcrs: dict[str, dict[str, str]],
    ticket: str | None,
    eventlog_b64: str,
    eventlog_sha256: str | None,
) -> EvidenceIn:
    """The evidence as the wire model, with the quote and signature already in base64; without
    ``challenge`` (for a server that gave no ticket) and ``eventlog_sha256`` when None: the
    fields an older server does not know are not sent (dump it with ``exclude_unset``)."""
    fields: dict[str, Any] = {
        "nonce": nonce,
        "quote": quote,
        "signature": signature,
        "pcrs": pcrs,
        "eventlog": eventlog_b64,
        "secure_config": None,
    }
    if ticket is not None:
        fields["challenge"] = ticket
    if eventlog_sha256 is not None:
        fields.update(eventlog=None, eventlog_sha256=eventlog_sha256)
    return EvidenceIn.model_construct(**fields)


class Boot:
    """What the hosts of one measured boot share, serialised once: the event log's SHA-256, per
    PCR selection the end of the quote, and the evidence's JSON as a template built from the wire
    model (:func:`evidence_model`) with slots for the nonce, quote, signature and ticket."""

    def __init__(
        self,
        pcrs: dict[str, dict[int, bytes]],
        pcr_json: dict[str, dict[str, str]],
        eventlog: bytes,
        eventlog_b64: str,
    ) -> None:
        self.pcrs = pcrs
        self.pcr_json = pcr_json
        self.eventlog_b64 = eventlog_b64
        self.eventlog_sha256 = hashlib.sha256(eventlog).hexdigest() if eventlog_b64 else ""
        self._tails: dict[tuple[int, ...], bytes] = {}
        self._templates: dict[tuple[tuple[int, ...], bool, bool], list[bytes]] = {}

    def chosen(self, pcrs: list[int]) -> dict[str, dict[str, str]]:
        """The evidence's ``pcrs`` for a PCR selection."""
        return {"sha256": {str(i): self.pcr_json["sha256"][str(i)] for i in pcrs}}

    def tail(self, pcrs: list[int]) -> bytes:
        """The TPMS_ATTEST bytes after the nonce for a PCR selection."""
        key = tuple(pcrs)
        found = self._tails.get(key)
        if found is None:
            bitmap = bytearray(3)
            for index in pcrs:
                bitmap[index // 8] |= 1 << (index % 8)
            values = [self.pcrs["sha256"][i] for i in sorted(pcrs)]
            found = _ATTEST_MIDDLE + bytes(bitmap) + b2(hashlib.sha256(b"".join(values)).digest())
            self._tails[key] = found
        return found

    def template(self, pcrs: list[int], ticket: bool, known: bool) -> list[bytes]:
        """The evidence's JSON split at its slots: text, slot, text, ..., text."""
        key = (tuple(pcrs), ticket, known)
        found = self._templates.get(key)
        if found is None:
            model = evidence_model(
                _NONCE,
                _QUOTE,
                _SIGNATURE,
                self.chosen(pcrs),
                _TICKET if ticket else None,
                self.eventlog_b64,
                self.eventlog_sha256 if known else None,
            )
            body = model.model_dump_json(exclude_unset=True).encode()
            found = self._templates[key] = _SLOTS.split(body)
        return found


@dataclass
class SimHost:
    name: str
    tpm: SimTpm
    token: str = ""
    pcr_json: dict[str, dict[str, str]] = field(default_factory=dict)
    eventlog_b64: str = ""
    boot: Boot | None = field(default=None, repr=False)
    _authorization: tuple[str, bytes] = field(default=("", b""), init=False, repr=False)
    _attest_head: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.boot is None:
            self.boot = Boot(self.tpm.pcrs, self.pcr_json, self.tpm.eventlog, self.eventlog_b64)
        self._attest_head = struct.pack(">IH", 0xFF544347, 0x8018) + b2(self.tpm.ak_name)

    @property
    def eventlog_sha256(self) -> str:
        """SHA-256 (hex) of the event log this host sends."""
        assert self.boot is not None
        return self.boot.eventlog_sha256

    def authorization(self) -> bytes:
        """The ``Authorization`` header line for the agent token (built once per token)."""
        if self._authorization[0] != self.token:
            self._authorization = (self.token, f"Authorization: Bearer {self.token}\r\n".encode())
        return self._authorization[1]

    def quote(self, nonce_hex: str, pcrs: list[int]) -> tuple[bytes, bytes]:
        """The quote (TPMS_ATTEST) over ``nonce_hex`` and ``pcrs`` and its signature
        (TPMT_SIGNATURE), base64: only the signature is computed here."""
        assert self.boot is not None
        attest = self._attest_head + b2(bytes.fromhex(nonce_hex)) + self.boot.tail(pcrs)
        r, s = decode_dss_signature(self.tpm.ak.sign(attest, _SIGN))
        signature = _SIGNATURE_HEAD + b2(r.to_bytes(32, "big")) + b2(s.to_bytes(32, "big"))
        return _b64(attest), _b64(signature)

    def evidence(self, nonce_hex: str, pcrs: list[int]) -> dict[str, Any]:
        """The evidence for a challenge without a ticket, as a JSON object (from the wire model,
        not the template): only the quote's signature is computed here."""
        assert self.boot is not None
        attest, signature = self.quote(nonce_hex, pcrs)
        model = evidence_model(
            nonce_hex,
            attest.decode(),
            signature.decode(),
            self.boot.chosen(pcrs),
            None,
            self.eventlog_b64,
            None,
        )
        return model.model_dump(mode="json", exclude_unset=True)

    def evidence_body(
        self,
        nonce_hex: str,
        pcrs: list[int],
        challenge: Any = None,
        server_eventlog_sha256: str | None = None,
    ) -> bytes:
        """:meth:`evidence` serialised (JSON, UTF-8) into the boot's template. ``challenge``:
        the challenge answer's opaque ``challenge``, echoed when not None; the event log is left
        out (only its SHA-256 sent) when ``server_eventlog_sha256`` says the server holds it."""
        assert self.boot is not None
        boot = self.boot
        known = bool(boot.eventlog_sha256) and server_eventlog_sha256 == boot.eventlog_sha256
        parts = boot.template(pcrs, challenge is not None, known)
        attest, signature = self.quote(nonce_hex, pcrs)
        slots = {  # the nonce is hex and the others base64: JSON as they are
            b"@nonce@": nonce_hex.encode(),
            b"@quote@": attest,
            b"@signature@": signature,
            b'"@ticket@"': json.dumps(challenge).encode(),
        }
        out = [parts[0]]
        for index in range(1, len(parts), 2):
            out += (slots[parts[index]], parts[index + 1])
        return b"".join(out)


def make_hosts(count: int, prefix: str = "sim") -> list[SimHost]:
    """``count`` hosts with their own keys and one shared (lab firmware) boot."""
    boot = SoftTpm()
    pcr_json = {"sha256": {str(i): v.hex() for i, v in boot.pcrs["sha256"].items()}}
    eventlog = b64(boot.eventlog)
    shared = Boot(boot.pcrs, pcr_json, boot.eventlog, eventlog)
    return [
        SimHost(
            f"{prefix}{n:05d}",
            SimTpm(eventlog=boot.eventlog, pcrs=boot.pcrs),
            pcr_json=pcr_json,
            eventlog_b64=eventlog,
            boot=shared,
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
    # the nonces of the evidence answered 200, and of evidence sent without an answer: the
    # verdicts stored must be exactly the first, plus some of the second
    accepted_nonces: set[str] = field(default_factory=set)
    unanswered_nonces: set[str] = field(default_factory=set)

    def note(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


_JSON = b"Content-Type: application/json\r\n"
_CHALLENGE = b"POST /v1/attest/challenge HTTP/1.1\r\n" + _JSON
_EVIDENCE = b"POST /v1/attest/evidence HTTP/1.1\r\n" + _JSON


class Fleet:
    """Agents talking HTTPS to ``urls`` (instances of one service); each agent starts at its own
    instance (``hash(name) % len(urls)``) and moves to the next one when a request fails.

    HTTP is :mod:`scale._http`: persistent connections (at most ``connections`` per instance),
    requests written from pre-built parts, answers parsed no further than needed."""

    def __init__(self, urls: list[str], ca: Path, *, connections: int = 64) -> None:
        self.urls = urls
        context = ssl.create_default_context(cafile=str(ca))
        self.pools = [Pool(url, context, size=connections, timeout=30) for url in urls]
        self.outcome = Outcome()

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()

    async def _post(
        self, start: int, path: str, head: bytes, body: bytes, *, evidence: bool = False
    ) -> tuple[Response, int]:
        """POST with retries (backoff 50 ms doubling to 2 s, jitter), moving to the next instance
        after a transport error or a 5xx; gives up after 12 tries. ``head``: the request line
        and headers (see :meth:`Pool.request`). Returns the answer and, for ``evidence``, how many
        tries wrote the request and got no answer (each also counted in ``outcome.ambiguous``)."""
        unanswered = 0
        delay = 0.05
        for attempt in range(12):
            pool = self.pools[(start + attempt) % len(self.pools)]
            try:
                response = await pool.request(head, body)
                if response.unanswered:  # a stale keep-alive connection, tried again at once
                    self.outcome.note(f"{path} no answer on a reused connection")
                    if evidence:
                        self.outcome.ambiguous += response.unanswered
                        unanswered += response.unanswered
                if response.status_code < 500:
                    return response, unanswered
                self.outcome.note(f"{path} {response.status_code}")
            except TransportError as exc:
                self.outcome.note(f"{path} {exc.kind}")
                if evidence and exc.sent:
                    self.outcome.ambiguous += 1
                    unanswered += 1
            self.outcome.retries += 1
            await asyncio.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 2.0)
        raise RuntimeError(f"{path}: no instance answered after 12 tries")

    async def _post_json(self, start: int, path: str, body: dict[str, Any]) -> Response:
        head = b"POST %s HTTP/1.1\r\n%s" % (path.encode(), _JSON)
        response, _ = await self._post(start, path, head, json.dumps(body).encode())
        return response

    async def enrol(self, host: SimHost, index: int = 0) -> None:
        start = EnrolStart(
            name=host.name, ek_public=b64(host.tpm.ek_public), ak_public=b64(host.tpm.ak_public)
        )
        started = await self._post_json(index, "/v1/enrol/start", start.model_dump(mode="json"))
        assert started.status_code == 200, started.text
        body = started.json()
        secret = host.tpm.activate(
            base64.b64decode(body["credential_blob"]), base64.b64decode(body["encrypted_secret"])
        )
        finish = EnrolFinish(enrolment_id=body["enrolment_id"], secret=b64(secret))
        finished = await self._post_json(index, "/v1/enrol/finish", finish.model_dump(mode="json"))
        assert finished.status_code == 200, finished.text
        host.token = finished.json()["agent_token"]

    async def attest(self, host: SimHost, index: int, *, alternate: bool = False) -> str:
        """One attestation: challenge, then evidence (to the next instance with ``alternate``),
        a new challenge when the nonce was refused (409: consumed by a try that got no answer)
        or when the server does not hold the event log it said it held (422 EventLogUnknown:
        then with the full log). Returns the verdict's status."""
        began = time.perf_counter()
        authorization = host.authorization()
        full_log = False
        for _ in range(5):
            challenge, _ = await self._post(
                index, "/v1/attest/challenge", _CHALLENGE + authorization, b"{}"
            )
            if challenge.status_code != 200:
                raise RuntimeError(f"challenge refused: {challenge.text}")
            data = challenge.json()
            body = host.evidence_body(
                data["nonce"],
                data["pcrs"],
                data.get("challenge"),
                None if full_log else data.get("eventlog_sha256"),
            )
            answer, unanswered = await self._post(
                index + 1 if alternate else index,
                "/v1/attest/evidence",
                _EVIDENCE + authorization,
                body,
                evidence=True,
            )
            if unanswered:
                self.outcome.ambiguous_per_host[host.name] = (
                    self.outcome.ambiguous_per_host.get(host.name, 0) + unanswered
                )
                self.outcome.unanswered_nonces.add(data["nonce"])
            status_code = answer.status_code
            if status_code == 200:
                self.outcome.accepted_nonces.add(data["nonce"])
                self.outcome.accepted += 1
                self.outcome.per_host[host.name] = self.outcome.per_host.get(host.name, 0) + 1
                self.outcome.latencies.append(time.perf_counter() - began)
                status: str = answer.json()["status"]
                return status
            if status_code == 409:
                self.outcome.note(f"evidence 409 {_error(answer)}")
                continue
            if status_code == 422 and _error(answer) == "EventLogUnknown":
                self.outcome.note("evidence 422 EventLogUnknown")
                full_log = True
                continue
            raise RuntimeError(f"evidence refused ({status_code}): {answer.text}")
        raise RuntimeError("five challenges refused in a row")

    async def safe_attest(self, host: SimHost, index: int, *, alternate: bool = False) -> None:
        try:
            await self.attest(host, index, alternate=alternate)
        except Exception as exc:
            self.outcome.failed += 1
            self.outcome.note(f"gave up: {exc}"[:120])


def _error(answer: Response) -> str | None:
    """The ``error`` of a JSON error answer (None when it has none)."""
    try:
        data = answer.json()
    except ValueError:
        return None
    return data.get("error") if isinstance(data, dict) else None


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
