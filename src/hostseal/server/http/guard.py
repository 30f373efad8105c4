"""Bounds on what a client can make the server do before it is known who the client is.

:class:`Guard` is ASGI middleware in front of every route of the application (the attestation
fast path, :mod:`hostseal.server.http.fastpath`, bounds its own two requests the same way):

- **Body size.** A request whose ``Content-Length`` is over the limit is answered 413 at once,
  its body never read; a body without one (``Transfer-Encoding: chunked``) is read up to the
  limit and no further, then answered 413. Nothing past the limit is buffered. The limit is
  ``max_body`` (1 MiB), or ``max_evidence_body`` (16 MiB) for ``POST /v1/attest/evidence``.
- **Rates on the routes that take no token.** ``POST /v1/enrol/start``, ``POST
  /v1/enrol/finish`` (``enrol_per_minute`` each) and the dashboard's ``POST /ui/login``
  (``login_per_minute``) are limited per client address: a token bucket that holds a minute's
  worth and refills evenly. Over it: 429 with ``Retry-After``. The buckets live in this process
  (each instance of a shared service limits on its own) and count the address the connection
  comes from (behind a reverse proxy, the proxy's).

:class:`Limits` also counts failed authentications (no token, malformed header, unknown or
revoked token, removed host, wrong role) by route and reason for ``/metrics`` and logs each one
with the method, route and client address, never the token or any part of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from hostseal.server.errors import Forbidden, RequestTooLarge, TooManyRequests, Unauthenticated
from hostseal.server.settings import ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("hostseal.server")

EVIDENCE = "/v1/attest/evidence"
# (method, path) -> the limit that applies, per client address
RATE_LIMITED = {
    ("POST", "/v1/enrol/start"): "enrol-start",
    ("POST", "/v1/enrol/finish"): "enrol-finish",
    ("POST", "/ui/login"): "login",
}
_WHAT = {
    "enrol-start": ("enrolment requests", "HOSTSEAL_SERVER_ENROL_PER_MINUTE"),
    "enrol-finish": ("enrolment requests", "HOSTSEAL_SERVER_ENROL_PER_MINUTE"),
    "login": ("login attempts", "HOSTSEAL_SERVER_LOGIN_PER_MINUTE"),
}
MAX_ADDRESSES = 100_000  # addresses remembered per limit (the least recently seen go first)


def size_text(size: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def too_large(limit: int, *, evidence: bool) -> RequestTooLarge:
    if evidence:
        remedy = (
            "Send the event log as the firmware wrote it (it is far smaller); an administrator "
            "can raise HOSTSEAL_SERVER_MAX_EVIDENCE_BODY on the server."
        )
    else:
        remedy = (
            "Send a smaller request; an administrator can raise HOSTSEAL_SERVER_MAX_BODY on the "
            "server."
        )
    return RequestTooLarge(
        f"The request body is larger than {size_text(limit)}, this server's limit.", remedy
    )


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    logged: float = -1e18


class RateLimiter:
    """``per_minute`` requests a minute per address: a bucket of that many, refilled evenly."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str) -> tuple[int | None, bool]:
        """``(None, _)`` when the request may go on, else the seconds to wait and whether this
        refusal should be logged (the first of each minute per address)."""
        now = self.clock()
        rate = self.per_minute / 60.0
        with self._lock:
            bucket = self._buckets.pop(address, None)
            if bucket is None:
                bucket = _Bucket(float(self.per_minute), now)
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            self._buckets[address] = bucket  # the most recently seen last
            while len(self._buckets) > MAX_ADDRESSES:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None, False
            wait = max(1, int((1.0 - bucket.tokens) / rate + 0.999))
            first = now - bucket.logged >= 60.0
            if first:
                bucket.logged = now
            return wait, first


class Limits:
    """The limits of one server process and its counters for ``/metrics``."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.rates = {
            "enrol-start": RateLimiter(settings.enrol_per_minute),
            "enrol-finish": RateLimiter(settings.enrol_per_minute),
            "login": RateLimiter(settings.login_per_minute),
        }
        self.auth_failures: dict[tuple[str, str], int] = {}
        self.routes: dict[Any, str] = {}  # endpoint -> its route's full template
        self.refused: dict[str, int] = {}
        self._lock = threading.Lock()

    def body_limit(self, path: str) -> int:
        return self.settings.max_evidence_body if path == EVIDENCE else self.settings.max_body

    def count_refused(self, limit: str) -> None:
        with self._lock:
            self.refused[limit] = self.refused.get(limit, 0) + 1

    def auth_failed(self, method: str, route: str, address: str, reason: str) -> None:
        """Count a failed authentication and log it (never the token)."""
        with self._lock:
            key = (route, reason)
            self.auth_failures[key] = self.auth_failures.get(key, 0) + 1
        log.warning("authentication failed: %s %s from %s: %s", method, route, address, reason)

    def name_routes(self, prefix: str, *routers: Any) -> None:
        """Remember the full templates (``prefix`` + path) of the routers' routes: the labels
        of :meth:`note` (an included route knows only its own path)."""
        for router in routers:
            for route in router.routes:
                if hasattr(route, "endpoint") and hasattr(route, "path"):
                    self.routes[route.endpoint] = prefix + route.path

    def note(self, scope: Scope, err: BaseException, route: str | None = None) -> None:
        """Count and log ``err`` if it is a failed authentication (by ``route``: the matched
        route's template, never the raw path)."""
        reason = getattr(err, "reason", None)
        if isinstance(err, (Unauthenticated, Forbidden)) and reason:
            matched = scope.get("route")
            label = (
                route
                or self.routes.get(getattr(matched, "endpoint", None))
                or getattr(matched, "path", None)
                or "other"
            )
            self.auth_failed(scope["method"], label, client_address(scope), reason)

    def metrics(self) -> str:
        lines = [
            "# HELP hostseal_auth_failures_total Failed authentications since this instance "
            "started, by route and reason.",
            "# TYPE hostseal_auth_failures_total counter",
        ]
        with self._lock:
            failures = sorted(self.auth_failures.items())
            refused = dict(self.refused)
        for (route, reason), count in failures:
            lines.append(
                f'hostseal_auth_failures_total{{route="{_label(route)}",'
                f'reason="{_label(reason)}"}} {count}'
            )
        lines += [
            "# HELP hostseal_requests_refused_total Requests refused by a limit since this "
            "instance started: body, evidence-body, enrol-start, enrol-finish, login.",
            "# TYPE hostseal_requests_refused_total counter",
        ]
        for limit in ("body", "evidence-body", *self.rates):
            lines.append(
                f'hostseal_requests_refused_total{{limit="{limit}"}} {refused.get(limit, 0)}'
            )
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def send_error(
    send: Send, status: int, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """A JSON error answer, as the application writes them."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class Guard:
    """ASGI middleware: the body limit and the per-address rates (see the module)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        kind = RATE_LIMITED.get((scope["method"], path))
        if kind is not None and await self._rate_limited(kind, scope, send):
            return
        limit = self.limits.body_limit(path)
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            if length.strip().isdigit() and int(length) > limit:
                await self._too_large(scope, send, limit)
                return
            await self.app(scope, receive, send)  # the server reads no more than that
            return
        if not chunked:
            await self.app(scope, receive, send)  # no body
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(scope, send, limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _rate_limited(self, kind: str, scope: Scope, send: Send) -> bool:
        address = client_address(scope)
        limiter = self.limits.rates[kind]
        wait, first = limiter.take(address)
        if wait is None:
            return False
        self.limits.count_refused(kind)
        what, variable = _WHAT[kind]
        if first:
            log.warning(
                "rate limit: %s %s from %s: more than %d %s a minute",
                scope["method"], scope["path"], address, limiter.per_minute, what,
            )  # fmt: skip
        err = TooManyRequests(
            f"Too many {what} from {address}: at most {limiter.per_minute} a minute from one "
            "address.",
            f"Retry in {wait} seconds (Retry-After); an administrator can raise {variable} on "
            "the server.",
            wait,
        )
        await send_error(send, 429, err.to_dict(), ((b"retry-after", str(wait).encode()),))
        return True

    async def _too_large(self, scope: Scope, send: Send, limit: int) -> None:
        evidence = scope["path"] == EVIDENCE
        self.limits.count_refused("evidence-body" if evidence else "body")
        log.warning(
            "request refused: %s %r from %s: body over %s",
            scope["method"], scope["path"], client_address(scope), size_text(limit),
        )  # fmt: skip
        await send_error(send, 413, too_large(limit, evidence=evidence).to_dict())


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the application: the body read already, then the client's messages
    (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
