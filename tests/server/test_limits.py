"""Issue 12, item 4: every input has a bound, unauthenticated routes have a rate, failed
authentications are counted and logged.

In-process against the application (as the server runs it, behind the fast path), then against a
real ``hostseal server run`` over TLS: a 200 MB body is refused with 413 while the server's
resident memory stays put (figures printed: ``pytest -s``).
"""

from __future__ import annotations

import base64
import json
import logging
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

from _service import Live, live_service
from hostseal.server.clock import FixedClock
from hostseal.server.settings import ServerSettings
from hostseal.server.storage.models import Enrolment

from ._softtpm import SoftTpm
from .conftest import Server, make_server

MiB = 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(
    app: Any,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 40000),
) -> httpx.Response:
    """One request into the ASGI app; ``chunked`` sends the body without a Content-Length."""

    async def pieces() -> AsyncIterator[bytes]:
        assert content is not None
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="https://test") as http:
            body: Any = pieces() if chunked and content is not None else content
            return await http.request(method, path, content=body, headers=headers or {})

    return anyio.run(go)


def _enrol_body(tpm: SoftTpm, name: str = "host1", **fields: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "ek_public": _b64(tpm.ek_public),
        "ek_certificate": None,
        "ak_public": _b64(tpm.ak_public),
    }
    body.update(fields)
    return body


def _enrolments(server: Server) -> int:
    with server.ctx.sessions() as session:
        return int(session.scalar(sql_select(func.count()).select_from(Enrolment)) or 0)


def _assert_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["message"] and body["remedy"], body
    return body


# --- request bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "token"),
    [
        ("POST", "/v1/enrol/start", None),
        ("POST", "/v1/enrol/finish", None),
        ("PUT", "/v1/policies/big", "operator"),
        ("POST", "/v1/hosts/host1/approve", "operator"),
        ("POST", "/ui/login", None),
    ],
)
def test_a_body_over_the_limit_is_refused_with_413(
    server: Server, method: str, path: str, token: str | None, chunked: bool
) -> None:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {getattr(server, token)}"
    over = b"{" + b" " * (server.ctx.settings.max_body + 10) + b"}"
    response = _call(server.api.app, method, path, content=over, chunked=chunked, headers=headers)
    body = _assert_error(response, 413, "RequestTooLarge")
    assert body["message"] == "The request body is larger than 1 MiB, this server's limit."
    assert "HOSTSEAL_SERVER_MAX_BODY" in body["remedy"]
    assert _enrolments(server) == 0


def test_evidence_has_its_own_larger_limit(server: Server) -> None:
    over = b" " * (server.ctx.settings.max_evidence_body + 1)
    for chunked in (False, True):
        response = _call(
            server.api.app, "POST", "/v1/attest/evidence", content=over, chunked=chunked
        )
        _assert_error(response, 413, "RequestTooLarge")


def test_a_body_within_the_limit_still_works(server: Server, tpm: SoftTpm) -> None:
    body = json.dumps(_enrol_body(tpm)).encode()
    for chunked in (False, True):
        response = _call(
            server.api.app,
            "POST",
            "/v1/enrol/start",
            content=body,
            chunked=chunked,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text


# --- fields -------------------------------------------------------------------------------------


def test_an_oversized_ek_certificate_is_refused_and_nothing_is_stored(
    server: Server, tpm: SoftTpm
) -> None:
    certificate = b"\x30\x82" + b"\x00" * (64 * 1024)
    response = server.api.post(
        "/v1/enrol/start", json=_enrol_body(tpm, ek_certificate=_b64(certificate))
    )
    body = _assert_error(response, 422, "RequestInvalid")
    assert "ek_certificate" in body["message"]
    assert _enrolments(server) == 0


@pytest.mark.parametrize(
    ("field", "value", "error", "shown"),
    [
        ("name", "h" * 254, "RequestInvalid", "name"),
        ("name", "host1\n", "Unprocessable", "is not a host name"),
        ("ek_public", _b64(b"\x00" * 4096), "RequestInvalid", "ek_public"),
        ("ak_public", _b64(b"\x00" * 4096), "RequestInvalid", "ak_public"),
    ],
)
def test_oversized_or_malformed_enrolment_fields_are_refused(
    server: Server, tpm: SoftTpm, field: str, value: str, error: str, shown: str
) -> None:
    response = server.api.post("/v1/enrol/start", json=_enrol_body(tpm, **{field: value}))
    body = _assert_error(response, 422, error)
    assert shown in body["message"]
    assert _enrolments(server) == 0


def test_long_reasons_comments_and_names_are_refused(server: Server) -> None:
    long_text = "x" * 5000
    cases = [
        ("POST", "/v1/hosts/host1/approve", {"reason": long_text}, "reason"),
        ("POST", "/v1/hosts/host1/reconnect", {"reason": long_text}, "reason"),
        ("POST", "/v1/alarms/1/ack", {"comment": long_text}, "comment"),
        ("POST", "/v1/alarms/1/reset", {"comment": long_text}, "comment"),
        ("POST", "/v1/policies/capture", {"name": "p" * 300, "host": "host1"}, "name"),
        ("POST", "/v1/policies/capture", {"name": "p", "host": "h" * 300}, "host"),
        ("PUT", "/v1/hosts/host1/policy", {"policy": "p" * 300}, "policy"),
    ]
    for method, path, body, field in cases:
        response = server.api.request(method, path, token=server.operator, json=body)
        shown = _assert_error(response, 422, "RequestInvalid")
        assert field in shown["message"], (path, shown)


def test_a_policy_document_over_the_body_limit_is_refused(server: Server) -> None:
    """A policy document is bounded by the body limit (1 MiB by default)."""
    document = {"pcrs": {"sha256": {str(i): "00" * 32 for i in range(24)}}, "pad": "x" * (2 * MiB)}
    response = server.api.put("/v1/policies/big", token=server.operator, json=document)
    _assert_error(response, 413, "RequestTooLarge")


# --- rates --------------------------------------------------------------------------------------


@pytest.fixture
def limited(settings: ServerSettings, clock: FixedClock) -> Iterator[Server]:
    srv = make_server(replace(settings, enrol_per_minute=3, login_per_minute=2), clock)
    yield srv
    srv.ctx.close()


def test_enrolments_from_one_address_are_rate_limited(limited: Server) -> None:
    app = limited.api.app
    headers = {"content-type": "application/json"}
    for n in range(3):
        body = json.dumps(_enrol_body(SoftTpm(), f"rate{n}")).encode()
        response = _call(app, "POST", "/v1/enrol/start", content=body, headers=headers)
        assert response.status_code == 200, response.text
    body = json.dumps(_enrol_body(SoftTpm(), "rate3")).encode()
    refused = _call(app, "POST", "/v1/enrol/start", content=body, headers=headers)
    shown = _assert_error(refused, 429, "TooManyRequests")
    assert shown["message"] == (
        "Too many enrolment requests from 127.0.0.1: at most 3 a minute from one address."
    )
    assert "HOSTSEAL_SERVER_ENROL_PER_MINUTE" in shown["remedy"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert _enrolments(limited) == 3
    # another address is not affected; finishing is limited on its own
    other = _call(
        app, "POST", "/v1/enrol/start", content=body, headers=headers, client=("10.1.2.3", 5)
    )
    assert other.status_code == 200, other.text
    finish = json.dumps({"enrolment_id": "x", "secret": ""}).encode()
    for _ in range(3):
        answer = _call(app, "POST", "/v1/enrol/finish", content=finish, headers=headers)
        assert answer.status_code != 429, answer.text
    again = _call(app, "POST", "/v1/enrol/finish", content=finish, headers=headers)
    _assert_error(again, 429, "TooManyRequests")


def test_dashboard_logins_from_one_address_are_rate_limited(limited: Server) -> None:
    app = limited.api.app
    form = {"content-type": "application/x-www-form-urlencoded"}
    answers = [
        _call(app, "POST", "/ui/login", content=b"token=hst_wrong&csrf=x", headers=form)
        for _ in range(3)
    ]
    assert [a.status_code for a in answers[:2]] != [429, 429]
    shown = _assert_error(answers[2], 429, "TooManyRequests")
    assert "login" in shown["message"]
    assert "retry-after" in answers[2].headers


# --- failed authentications ---------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def test_failed_authentications_are_counted_and_logged_without_the_token(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "hst_" + "S3cr3tT0k3n" * 4
    caplog.set_level(logging.WARNING, logger="hostseal.server")
    assert server.api.get("/v1/hosts", token=secret).status_code == 401
    assert server.api.get("/v1/hosts").status_code == 401
    assert (
        server.api.post("/v1/hosts/host1/approve", token=server.viewer, json={}).status_code == 403
    )
    assert server.api.post("/v1/attest/challenge", token=secret, json={}).status_code == 401
    assert server.api.get("/v1/escrow/host1", token=server.operator).status_code == 403
    metrics = server.api.get("/metrics", token=server.viewer).text
    route = {"route": "/v1/hosts"}
    assert _metric(metrics, "hostseal_auth_failures_total", **route, reason="unknown-token") == 1
    assert _metric(metrics, "hostseal_auth_failures_total", **route, reason="no-token") == 1
    approve = {"route": "/v1/hosts/{name}/approve"}
    assert _metric(metrics, "hostseal_auth_failures_total", **approve, reason="wrong-role") == 1
    challenge = {"route": "/v1/attest/challenge"}
    assert (
        _metric(metrics, "hostseal_auth_failures_total", **challenge, reason="unknown-token") == 1
    )
    assert "# TYPE hostseal_auth_failures_total counter" in metrics
    logged = [r.getMessage() for r in caplog.records if "authentication" in r.getMessage()]
    assert len(logged) == 5, logged
    assert logged[0] == "authentication failed: GET /v1/hosts from 127.0.0.1: unknown-token"
    text = caplog.text
    for part in (secret, secret[4:], secret[:12], secret[-12:]):
        assert part not in text


# --- a real server --------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _early_answer(sock: ssl.SSLSocket) -> bytes:
    """What the server sent so far (b"" when nothing: TLS session tickets are not an answer)."""
    if not (select.select([sock], [], [], 0)[0] or sock.pending()):
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return b""
    finally:
        sock.setblocking(True)
        sock.settimeout(30)


def _raw_post(live: Live, path: str, total: int, *, chunked: bool) -> tuple[int, dict[str, Any]]:
    """POST ``total`` bytes to ``path`` over TLS, 1 MiB at a time, stopping as soon as the
    server answers; returns the status and the JSON body."""
    host, port = live.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(live.ca))
    raw = socket.create_connection((host, int(port)), timeout=30)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n".encode()
    )
    piece = b" " * MiB
    sent = 0
    answer = b""
    try:
        while sent < total:
            early = _early_answer(sock)
            if early:
                answer = early
                break  # the server answered before the body was sent
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            sock.sendall(data)
            sent += len(piece)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    try:
        while True:
            head, found, body = answer.partition(b"\r\n\r\n")
            if found:
                length = [v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                          if k.lower() == b"content-length"]  # fmt: skip
                if length and len(body) >= int(length[0]):
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        return 0, {"error": "no answer within 30 s"}
    finally:
        sock.close()
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("limits") / "server"
    with live_service(data, {"HOSTSEAL_SERVER_ENROL_PER_MINUTE": "4"}) as service:
        yield service


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_body_gets_413_and_the_server_memory_stays_bounded(
    live: Live, chunked: bool
) -> None:
    pid = live.process.pid
    before = _rss_kib(pid)
    began = time.monotonic()
    status, body = _raw_post(live, "/v1/hosts/x/approve", 200 * MiB, chunked=chunked)
    took = time.monotonic() - began
    after = _rss_kib(pid)
    print(
        f"\n200 MB body ({'chunked' if chunked else 'Content-Length'}): {status} in "
        f"{took:.2f} s; server RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"
    )
    assert status == 413, body
    assert body["error"] == "RequestTooLarge"
    assert after - before < 32 * 1024, (before, after)


def test_enrolments_beyond_the_rate_get_429_from_a_real_server(live: Live) -> None:
    with live.http() as client:
        answers = [
            client.post("/v1/enrol/start", json=_enrol_body(SoftTpm(), f"live{n}"))
            for n in range(5)
        ]
    assert [a.status_code for a in answers[:4]] == [200] * 4, [a.text for a in answers]
    refused = answers[4]
    assert refused.status_code == 429
    assert refused.json()["error"] == "TooManyRequests"
    assert int(refused.headers["retry-after"]) >= 1


def test_failed_authentication_shows_in_the_real_server_log_without_the_token(live: Live) -> None:
    secret = "hst_" + "L1v3S3cr3t" * 4
    with live.http(secret) as client:
        assert client.get("/v1/hosts").status_code == 401
    with live.http(live.viewer) as client:
        metrics = client.get("/metrics").text
    assert (
        _metric(metrics, "hostseal_auth_failures_total", route="/v1/hosts", reason="unknown-token")
        >= 1
    )
    logged = (live.data / "server.log").read_text()
    assert "authentication failed: GET /v1/hosts from 127.0.0.1: unknown-token" in logged
    assert secret[4:] not in logged and secret[:12] not in logged


def test_a_deeply_nested_policy_document_is_refused_with_what_to_do(server: Server) -> None:
    nested = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = _call(
        server.api.app,
        "PUT",
        "/v1/policies/p?reason=x",
        content=nested,
        headers={
            "authorization": f"Bearer {server.operator}",
            "content-type": "application/json",
        },
    )
    body = _assert_error(response, 400, "HttpError")
    assert body["remedy"] == "Check the request against docs/api.md (or GET /v1/openapi.json)."
