"""A minimal HTTP/1.1 client over asyncio TLS streams, for the simulated agents of the load tests.

Just enough HTTP for a JSON API (requests with a Content-Length body; answers with a
Content-Length or chunked body, or one that ends with the connection) with persistent
connections: a small pool per instance URL, at most ``size`` connections each. What a general
client spends on every request (header objects, URL parsing, encoders, state machines) is left
out, so that the load generator costs little CPU beside the server it measures.

Every failure to get a complete answer (connect refused, reset, closed, timed out, garbled)
is a :class:`TransportError`, which says whether bytes of the request were written (the server
may then have acted on it) and whether any byte of the answer came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from typing import Any
from urllib.parse import urlsplit


class TransportError(Exception):
    """No complete answer. ``sent``: bytes of the request were written (the server may have
    acted on it); ``answered``: at least one byte of the answer came."""

    kind = "TransportError"

    def __init__(self, message: str, *, sent: bool = False, answered: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.answered = answered


class ConnectError(TransportError):
    kind = "ConnectError"


class WriteError(TransportError):
    kind = "WriteError"


class ReadError(TransportError):
    kind = "ReadError"


class ProtocolError(TransportError):
    kind = "ProtocolError"


class Timeout(TransportError):
    kind = "Timeout"


class Response:
    __slots__ = ("content", "headers", "reused", "status_code", "unanswered")

    def __init__(self, status_code: int, headers: dict[bytes, bytes], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers  # lower-case names
        self.content = content
        self.reused = False  # sent on a connection that had carried an earlier request
        self.unanswered = 0  # tries on a stale connection that wrote the request, got nothing

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {len(self.content)} bytes>"


class _Connection:
    __slots__ = ("deadline", "idle_since", "pending", "reader", "timed_out", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = 0
        self.idle_since = 0.0
        self.pending = False  # a request written, its answer not read yet
        self.deadline = 0.0  # of the request in progress
        self.timed_out = False

    def usable(self) -> bool:
        """Still open and with nothing unread (an idle connection the server closed has
        seen its end of file)."""
        return not (
            self.writer.is_closing() or self.reader.at_eof() or len(self.reader._buffer) > 0
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        """Write ``request``, read its answer; (answer, connection reusable)."""
        writer, reader = self.writer, self.reader
        if writer.is_closing():
            raise WriteError("connection closed before the request")
        self.pending = True
        try:
            writer.write(request)
            await writer.drain()
        except (OSError, RuntimeError) as exc:
            raise WriteError(f"write failed: {exc!r}", sent=True) from exc
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ReadError(
                "connection closed before the answer" if not exc.partial else "truncated head",
                sent=True,
                answered=bool(exc.partial),
            ) from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("answer head too long", sent=True, answered=True) from None
        except OSError as exc:
            raise ReadError(f"read failed: {exc!r}", sent=True) from exc
        try:
            lines = head.split(b"\r\n")
            status_line = lines[0]
            if not status_line.startswith(b"HTTP/1."):
                raise ValueError(status_line[:40])
            status = int(status_line[9:12])
            headers: dict[bytes, bytes] = {}
            for line in lines[1:-2]:
                name, colon, value = line.partition(b":")
                if not colon:
                    raise ValueError(line[:40])
                headers[name.strip().lower()] = value.strip()
        except ValueError as exc:
            raise ProtocolError(f"bad answer head: {exc}", sent=True, answered=True) from None
        keep = status_line[7:8] == b"1"  # HTTP/1.1 persists unless told otherwise
        connection = headers.get(b"connection")
        if connection is not None:
            token = connection.lower()
            if b"close" in token:
                keep = False
            elif b"keep-alive" in token:
                keep = True
        try:
            length = headers.get(b"content-length")
            if length is not None:
                body = await reader.readexactly(int(length)) if length != b"0" else b""
            elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                body = await self._chunked()
            elif status in (204, 304) or 100 <= status < 200:
                body = b""
            else:  # the body ends with the connection
                body = await reader.read()
                keep = False
        except asyncio.IncompleteReadError:
            raise ReadError("truncated body", sent=True, answered=True) from None
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            raise ReadError(f"body: {exc!r}", sent=True, answered=True) from None
        self.pending = False
        return Response(status, headers, body), keep

    async def _chunked(self) -> bytes:
        reader = self.reader
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")


class Pool:
    """Persistent connections to one ``https://host:port`` (or ``http://``), at most ``size``
    at once; requests beyond that wait for one to be free.

    Requests time out after ``timeout`` s: a watchdog (a callback every ``timeout / 4`` s, at
    most 1 s, rather than a timer per request) aborts the connection of a request past its
    deadline, which then fails with :class:`Timeout`."""

    def __init__(
        self,
        url: str,
        context: ssl.SSLContext | None,
        *,
        size: int = 64,
        timeout: float = 30.0,
        idle_timeout: float = 4.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = context if parts.scheme == "https" else None
        if parts.scheme == "https" and self.ssl is None:
            self.ssl = ssl.create_default_context()
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self.host_header = f"Host: {netloc}\r\n".encode()
        self.size = size
        self.timeout = timeout
        # uvicorn closes a keep-alive connection idle for 5 s: one idle longer is not reused
        self.idle_timeout = idle_timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self.connects = 0  # connections opened, for tests and curiosity

    def _watch(self) -> None:
        now = time.monotonic()
        for connection in list(self._open):
            if connection.pending and connection.deadline < now:
                connection.timed_out = True
                connection.writer.transport.abort()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(min(1.0, self.timeout / 4), self._watch)

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                    limit=1 << 16,
                )
        except TimeoutError:
            raise Timeout(f"{self.url}: not connected in {self.timeout} s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:  # refused, reset, TLS failure
            raise ConnectError(f"{self.url}: {exc!r}") from exc
        self.connects += 1
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    def _checkout(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.idle_timeout and connection.usable():
                return connection
            self._discard(connection)
        return None

    async def request(self, head: bytes, body: bytes = b"") -> Response:
        """Send ``head`` (the request line and headers, each ending in CRLF, without Host,
        Content-Length and the blank line) and ``body``; the answer. A request that failed on
        a reused connection before any byte of the answer is sent once more on a new one
        (``Response.unanswered`` or ``TransportError.sent`` tell if the first try wrote it)."""
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (head, self.host_header, len(body), body)
        async with self._slots:
            if self._watchdog is None:
                self._watch()
            connection = self._checkout()
            lost = False
            if connection is not None:
                try:
                    response = await self._exchange(connection, request)
                    response.reused = True
                    return response
                except TransportError as exc:
                    if exc.answered or isinstance(exc, Timeout):
                        raise
                    lost = exc.sent
            connection = await self._connect()
            try:
                response = await self._exchange(connection, request)
            except TransportError as exc:
                exc.sent = exc.sent or lost
                raise
            response.unanswered = int(lost)
            return response

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        connection.deadline = time.monotonic() + self.timeout
        try:
            response, keep = await connection.exchange(request)
        except TransportError as exc:
            self._discard(connection)
            if connection.timed_out:
                raise Timeout(
                    f"{self.url}: no answer in {self.timeout} s",
                    sent=exc.sent,
                    answered=exc.answered,
                ) from None
            raise
        except BaseException:  # cancelled
            self._discard(connection)
            raise
        connection.used += 1
        if keep:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._discard(connection)
        return response

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._idle.clear()
        connections, self._open = list(self._open), set()
        for connection in connections:
            connection.close()
        if connections:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await asyncio.gather(
                        *(c.writer.wait_closed() for c in connections), return_exceptions=True
                    )
