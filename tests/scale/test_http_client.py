"""The load generator's HTTP client (``scale._http``) and the fleet's protocol handling, against a
tiny asyncio TLS HTTP/1.1 server started in each test (a certificate for 127.0.0.1 made here):
keep-alive reuse, Content-Length / chunked / read-to-close bodies, ``Connection: close``, dropped
and stale connections, timeouts, the TLS name check, and the agent's side of the attestation
protocol (the challenge echoed, the event log replaced by its digest, EventLogUnknown, 409, 5xx
fail-over)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import inspect
import ipaddress
import itertools
import json
import secrets
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from scale._http import ConnectError, Pool, ReadError, Timeout, TransportError
from scale.fleet import Fleet, SimHost, make_hosts

CT = b"Content-Type: application/json\r\n"


@dataclass
class Tls:
    ca: Path  # the (self-signed) certificate, as the clients' CA file
    server: ssl.SSLContext

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _tls(directory: Path, ip: str) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca, key_file = directory / "cert.pem", directory / "key.pem"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca, key_file)
    return Tls(ca, context)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return _tls(tmp_path_factory.mktemp("tls"), "127.0.0.1")


@dataclass
class Seen:
    connection: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


DROP = None  # a handler's answer: close the connection without answering
Answer = bytes | None
Handler = Callable[[Seen], Answer | Awaitable[Answer]]


def answer(
    status: int = 200,
    body: bytes | dict[str, Any] = b"",
    *,
    close: bool = False,
    headers: tuple[str, ...] = (),
) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    lines = [f"HTTP/1.1 {status} Whatever", "date: Mon, 01 Jan 2024 00:00:00 GMT"]
    lines += [f"content-length: {len(body)}", "content-type: application/json", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class TinyServer:
    """HTTP/1.1 over TLS on 127.0.0.1: reads requests (Content-Length bodies), records them,
    answers what ``handler`` returns (raw bytes; None: close without answering), closes after an
    HTTP/1.0 or ``Connection: close`` answer, and after ``keep_alive`` s idle when set."""

    def __init__(self, tls: Tls, handler: Handler, keep_alive: float | None = None) -> None:
        self.context = tls.server
        self.handler = handler
        self.keep_alive = keep_alive
        self.requests: list[Seen] = []
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.keep_alive):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, TimeoutError):
                    break
                request_line, *lines = head.decode().split("\r\n")[:-2]
                method, path, _ = request_line.split(" ")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(number, method, path, headers, body)
                self.requests.append(seen)
                reply = self.handler(seen)
                if inspect.isawaitable(reply):
                    reply = await reply
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                reply_head = reply.split(b"\r\n\r\n", 1)[0] + b"\r\n"
                if reply.startswith(b"HTTP/1.0") or b"\r\nConnection: close\r\n" in reply_head:
                    break
        finally:
            self.open -= 1
            writer.close()


_loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test on asyncio's own event loop and on uvloop's (which the benchmarks use when it
    is installed)."""
    global _loop_factory
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        _loop_factory = uvloop.new_event_loop
    yield request.param
    _loop_factory = None


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(30):
            return await coroutine

    with asyncio.Runner(loop_factory=_loop_factory) as runner:
        return runner.run(bounded())


def post(path: str) -> bytes:
    return b"POST %s HTTP/1.1\r\n%s" % (path.encode(), CT)


# -- the client ---------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_and_bodies_arrive_whole(tls: Tls) -> None:
    big = secrets.token_bytes(400_000)  # bodies many TLS records long

    def echo(seen: Seen) -> bytes:
        size = int(seen.path.rsplit("/", 1)[1])
        return answer(200, hashlib.sha256(seen.body).digest() + big[:size])

    async def go() -> None:
        server = TinyServer(tls, echo)
        pool = Pool(await server.start(), tls.client(), size=4)
        sizes = [0, 1, 65_536, 150_000, 10]
        responses = [await pool.request(post(f"/echo/{n}"), big[: n * 2]) for n in sizes]
        assert [r.status_code for r in responses] == [200] * 5
        for n, response in zip(sizes, responses, strict=True):
            assert response.content[:32] == hashlib.sha256(big[: n * 2]).digest()
            assert response.content[32:] == big[:n]
        assert [r.reused for r in responses] == [False, True, True, True, True]
        assert server.connections == pool.connects == 1
        assert {s.connection for s in server.requests} == {1}
        assert server.requests[0].headers["host"] == pool.url.removeprefix("https://")
        assert server.requests[3].headers["content-length"] == "300000"
        await pool.close()
        await server.stop()

    run(go())


def test_at_most_size_connections_at_once_and_waiting_requests_are_served(tls: Tls) -> None:
    async def slow(seen: Seen) -> bytes:
        await asyncio.sleep(0.05)
        return answer(200, seen.body)

    async def go() -> None:
        server = TinyServer(tls, slow)
        pool = Pool(await server.start(), tls.client(), size=3)
        bodies = [str(n).encode() for n in range(12)]
        responses = await asyncio.gather(*(pool.request(post("/x"), b) for b in bodies))
        assert [r.content for r in responses] == bodies
        assert server.most_open == server.connections == 3
        await pool.close()
        await server.stop()

    run(go())


def test_connection_close_is_honoured_and_the_next_request_opens_a_new_one(tls: Tls) -> None:
    def closing(seen: Seen) -> bytes:
        return answer(200, {"n": len(seen.body)}, close=seen.path == "/close")

    async def go() -> None:
        server = TinyServer(tls, closing)
        pool = Pool(await server.start(), tls.client())
        first = await pool.request(post("/close"), b"abc")
        second = await pool.request(post("/keep"), b"abcd")
        third = await pool.request(post("/keep"), b"")
        assert (first.json(), second.json(), third.json()) == ({"n": 3}, {"n": 4}, {"n": 0})
        assert (first.reused, second.reused, third.reused) == (False, False, True)
        assert [s.connection for s in server.requests] == [1, 2, 2]
        assert pool.connects == 2
        await pool.close()
        await server.stop()

    run(go())


def test_chunked_and_read_to_close_bodies(tls: Tls) -> None:
    def odd(seen: Seen) -> bytes:
        if seen.path == "/chunked":
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
            )
        # no length: the body is what comes until the server closes the connection
        return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"

    async def go() -> None:
        server = TinyServer(tls, odd)
        pool = Pool(await server.start(), tls.client())
        chunked = await pool.request(post("/chunked"))
        again = await pool.request(post("/chunked"))
        assert chunked.content == again.content == b"hello, world"
        assert again.reused  # the chunked body was read to its end: the connection is clean
        ended = await pool.request(post("/eof"))
        assert ended.content == b"until the end"
        assert ended.headers[b"content-type"] == b"text/plain"
        follow = await pool.request(post("/chunked"))
        assert not follow.reused and follow.unanswered == 0  # that connection ended with the body
        assert [s.connection for s in server.requests] == [1, 1, 1, 2]
        await pool.close()
        await server.stop()

    run(go())


def test_a_dropped_request_is_a_transport_error_that_says_what_was_sent(tls: Tls) -> None:
    async def go() -> None:
        server = TinyServer(tls, lambda seen: DROP)
        pool = Pool(await server.start(), tls.client())
        with pytest.raises(ReadError) as raised:
            await pool.request(post("/x"), b"payload")
        assert raised.value.sent and not raised.value.answered
        assert len(server.requests) == 1  # a fresh connection is not tried twice

        server.handler = lambda seen: b"HTTP/1.0 200 OK\r\ncontent-length: 100\r\n\r\nshort"
        with pytest.raises(ReadError) as truncated:
            await pool.request(post("/x"), b"")
        assert truncated.value.answered
        await server.stop()
        await pool.close()

        refused = Pool(pool.url, tls.client())
        with pytest.raises(ConnectError) as not_there:
            await refused.request(post("/x"), b"")
        assert not not_there.value.sent
        await refused.close()

    run(go())


def test_a_reused_connection_that_fails_unanswered_is_tried_once_more_on_a_new_one(
    tls: Tls,
) -> None:
    def once_per_connection(seen: Seen) -> Answer:
        # the second request on any connection is dropped (as a server closing an idle
        # keep-alive connection just as the request arrives)
        on_this = [s for s in server.requests if s.connection == seen.connection]
        return answer(200, b"ok") if len(on_this) == 1 else DROP

    server = TinyServer(tls, once_per_connection)

    async def go() -> None:
        pool = Pool(await server.start(), tls.client())
        first = await pool.request(post("/x"), b"1")
        second = await pool.request(post("/x"), b"2")
        assert first.content == second.content == b"ok"
        assert not second.reused and second.unanswered == 1  # written on the stale one
        assert [(s.connection, s.body) for s in server.requests] == [
            (1, b"1"),
            (1, b"2"),
            (2, b"2"),
        ]
        assert pool.connects == 2
        await pool.close()
        await server.stop()

    run(go())


def test_an_idle_connection_the_server_closed_is_not_reused(tls: Tls) -> None:
    async def go() -> None:
        server = TinyServer(tls, lambda seen: answer(200, b"ok"), keep_alive=0.2)
        pool = Pool(await server.start(), tls.client())
        await pool.request(post("/x"))
        await asyncio.sleep(0.5)  # the server closes the idle connection (as uvicorn after 5 s)
        second = await pool.request(post("/x"))
        # seen closed before use: a new connection, no request lost on the old one
        assert not second.reused and second.unanswered == 0
        assert [s.connection for s in server.requests] == [1, 2]
        await pool.close()
        await server.stop()

    run(go())


def test_a_connection_idle_longer_than_idle_timeout_is_not_reused(tls: Tls) -> None:
    async def go() -> None:
        server = TinyServer(tls, lambda seen: answer(200, b"ok"))
        pool = Pool(await server.start(), tls.client(), idle_timeout=0.3)
        await pool.request(post("/x"))
        assert (await pool.request(post("/x"))).reused
        await asyncio.sleep(0.4)
        third = await pool.request(post("/x"))
        assert not third.reused and third.unanswered == 0
        assert [s.connection for s in server.requests] == [1, 1, 2]
        await pool.close()
        await server.stop()

    run(go())


def test_a_request_without_answer_times_out(tls: Tls) -> None:
    async def never(seen: Seen) -> bytes:
        await asyncio.sleep(3600)
        raise AssertionError

    async def go() -> None:
        server = TinyServer(tls, never)
        pool = Pool(await server.start(), tls.client(), timeout=0.4)
        began = time.monotonic()
        with pytest.raises(Timeout) as raised:
            await pool.request(post("/x"), b"body")
        assert 0.4 <= time.monotonic() - began < 2.5
        assert raised.value.sent
        await pool.close()
        await server.stop()

    run(go())


def test_the_server_certificate_must_name_the_url_host(tls: Tls, tmp_path: Path) -> None:
    other = _tls(tmp_path, "127.0.0.2")  # valid, trusted, but for another address

    async def go() -> None:
        server = TinyServer(other, lambda seen: answer(200))
        url = await server.start()
        pool = Pool(url, other.client())
        with pytest.raises(ConnectError, match="certificate verify failed: IP address mismatch"):
            await pool.request(post("/x"))
        trusting = Pool(url, tls.client())  # a certificate from an issuer not trusted
        with pytest.raises(ConnectError, match="certificate verify failed"):
            await trusting.request(post("/x"))
        assert server.requests == []
        await pool.close()
        await trusting.close()
        await server.stop()

    run(go())


# -- the fleet's protocol -----------------------------------------------------------------------


class FakeService:
    """The agent endpoints of a hostseal server, with the verification left out (except the
    quote's nonce and signature, checked here), and switches for the new protocol fields and
    for failures."""

    def __init__(self, host: SimHost, *, new: bool, held: str | None = None) -> None:
        self.host = host
        self.new = new  # challenge tickets and event-log digests
        self.held = held  # the event log digest the server says it holds
        self.nonces: dict[str, str] = {}
        self.evidence: list[dict[str, Any]] = []
        self.plan: list[Answer | str] = []  # answers to the next evidence posts, then normal

    def __call__(self, seen: Seen) -> Answer:
        assert seen.headers["authorization"] == f"Bearer {self.host.token}"
        assert seen.headers["content-type"] == "application/json"
        if seen.path == "/v1/attest/challenge":
            assert seen.json() == {}
            nonce = secrets.token_hex(32)
            ticket = f"ticket-{len(self.nonces)}"
            self.nonces[nonce] = ticket
            data: dict[str, Any] = {"nonce": nonce, "expires_at": "x", "bank": "sha256"}
            data["pcrs"] = [0, 2, 4, 7]
            if self.new:
                data |= {"challenge": ticket, "eventlog_sha256": self.held}
            return answer(200, data)
        assert seen.path == "/v1/attest/evidence"
        body = seen.json()
        self.evidence.append(body)
        self._check_quote(body)
        if self.plan:
            planned = self.plan.pop(0)
            if isinstance(planned, str):
                return answer(422 if planned == "EventLogUnknown" else 409, {"error": planned})
            return planned
        return answer(200, {"status": "Passed", "messages": []})

    def _check_quote(self, body: dict[str, Any]) -> None:
        attest = base64.b64decode(body["quote"])
        nonce = bytes.fromhex(body["nonce"])
        at = 8 + len(self.host.tpm.ak_name)  # magic, type, the AK's name (TPM2B)
        assert attest[at : at + 34] == struct.pack(">H", 32) + nonce
        signature = base64.b64decode(body["signature"])
        r = int.from_bytes(signature[6:38], "big")
        s = int.from_bytes(signature[40:72], "big")
        self.host.tpm.ak.public_key().verify(
            encode_dss_signature(r, s), attest, ec.ECDSA(hashes.SHA256())
        )


@pytest.fixture(scope="module")
def host() -> SimHost:
    [one] = make_hosts(1, prefix="proto")
    one.token = "agent-token-123"
    return one


def _attest(
    tls: Tls, service: FakeService, *, urls: int = 1, dead_first: bool = False
) -> tuple[str, Fleet, TinyServer]:
    server = TinyServer(tls, service)

    async def go() -> tuple[str, Fleet]:
        url = await server.start()
        listed = [url] * urls
        if dead_first:
            gone = TinyServer(tls, service)
            listed.insert(0, await gone.start())
            await gone.stop()
        fleet = Fleet(listed, tls.ca)
        status = await fleet.attest(service.host, 0)
        await fleet.close()
        await server.stop()
        return status, fleet

    status, fleet = run(go())
    return status, fleet, server


def test_an_old_server_gets_the_full_log_and_no_new_fields(tls: Tls, host: SimHost) -> None:
    service = FakeService(host, new=False)
    status, fleet, _ = _attest(tls, service)
    assert status == "Passed"
    [sent] = service.evidence
    assert set(sent) == {"nonce", "quote", "signature", "pcrs", "eventlog", "secure_config"}
    assert sent["eventlog"] == host.eventlog_b64
    assert sent["pcrs"] == {
        "sha256": {str(i): host.pcr_json["sha256"][str(i)] for i in (0, 2, 4, 7)}
    }
    # what the dict API builds, but for the signature (ECDSA: random)
    expected = host.evidence(sent["nonce"], [0, 2, 4, 7])
    assert {**sent, "signature": None} == {**expected, "signature": None}
    assert (fleet.outcome.accepted, fleet.outcome.retries, fleet.outcome.errors) == (1, 0, {})


def test_a_new_server_holding_the_log_gets_the_ticket_and_the_digest(
    tls: Tls, host: SimHost
) -> None:
    assert host.eventlog_sha256 == hashlib.sha256(base64.b64decode(host.eventlog_b64)).hexdigest()
    service = FakeService(host, new=True, held=host.eventlog_sha256)
    status, _, _ = _attest(tls, service)
    assert status == "Passed"
    [sent] = service.evidence
    assert sent["challenge"] == service.nonces[sent["nonce"]]
    assert sent["eventlog"] is None
    assert sent["eventlog_sha256"] == host.eventlog_sha256


def test_a_new_server_holding_another_log_or_none_gets_the_log(tls: Tls, host: SimHost) -> None:
    for held in ("00" * 32, None):
        service = FakeService(host, new=True, held=held)
        assert _attest(tls, service)[0] == "Passed"
        [sent] = service.evidence
        assert sent["challenge"] == service.nonces[sent["nonce"]]
        assert sent["eventlog"] == host.eventlog_b64
        assert "eventlog_sha256" not in sent


def test_event_log_unknown_and_nonce_refusals_take_a_new_challenge(tls: Tls, host: SimHost) -> None:
    service = FakeService(host, new=True, held=host.eventlog_sha256)
    service.plan = ["EventLogUnknown", "NonceReplayed"]
    status, fleet, server = _attest(tls, service)
    assert status == "Passed"
    first, second, third = service.evidence
    assert len({first["nonce"], second["nonce"], third["nonce"]}) == 3
    assert first["eventlog"] is None and first["eventlog_sha256"] == host.eventlog_sha256
    # after EventLogUnknown the log goes in full for the rest of this attestation
    assert second["eventlog"] == third["eventlog"] == host.eventlog_b64
    assert "eventlog_sha256" not in second and "eventlog_sha256" not in third
    assert fleet.outcome.errors == {
        "evidence 422 EventLogUnknown": 1,
        "evidence 409 NonceReplayed": 1,
    }
    assert [s.path.rsplit("/", 1)[1] for s in server.requests] == ["challenge", "evidence"] * 3
    assert {s.connection for s in server.requests} == {1}  # all on one kept-alive connection


def test_an_evidence_refusal_is_an_error(tls: Tls, host: SimHost) -> None:
    service = FakeService(host, new=True)
    service.plan = [answer(422, {"error": "QuoteSignatureInvalid"})]
    with pytest.raises(RuntimeError, match="QuoteSignatureInvalid"):
        _attest(tls, service)


def test_a_5xx_and_a_dropped_evidence_move_on_and_count(tls: Tls, host: SimHost) -> None:
    service = FakeService(host, new=True, held=host.eventlog_sha256)
    service.plan = [answer(503, {"error": "DatabaseUnavailable"}), DROP]
    status, fleet, _ = _attest(tls, service, urls=2)
    assert status == "Passed"
    out = fleet.outcome
    assert out.retries == 2
    assert out.errors == {"/v1/attest/evidence 503": 1, "/v1/attest/evidence ReadError": 1}
    assert out.ambiguous == 1  # the dropped one was written: its verdict may be stored
    assert out.ambiguous_per_host == {host.name: 1}
    assert out.per_host == {host.name: 1} and out.accepted == 1
    assert len(service.evidence) == 3  # one nonce, sent three times (the server here takes it)


def test_an_instance_that_refuses_connections_is_skipped_without_ambiguity(
    tls: Tls, host: SimHost
) -> None:
    service = FakeService(host, new=True)
    status, fleet, _ = _attest(tls, service, dead_first=True)
    assert status == "Passed"
    out = fleet.outcome
    assert out.errors == {
        "/v1/attest/challenge ConnectError": 1,
        "/v1/attest/evidence ConnectError": 1,
    }
    assert out.retries == 2 and out.ambiguous == 0 and out.ambiguous_per_host == {}


def test_transport_errors_are_one_family() -> None:
    for kind in (ConnectError, ReadError, Timeout):
        assert issubclass(kind, TransportError)
        assert kind("x").kind == kind.__name__
