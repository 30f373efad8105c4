"""The attestation fast path: the two requests every agent makes every few minutes, answered
in front of the framework.

``POST /v1/attest/challenge`` and ``POST /v1/attest/evidence`` are most of a fleet's traffic.
Through FastAPI each request crosses about ten layers of middleware, routing and dependency
solving before the route runs, which costs more than the route itself. :class:`FastPath` wraps
the application: these two requests are read, validated with the same pydantic models, handed
to the same functions as the routes (:func:`~hostseal.server.http.api.agent.challenge_for`,
:func:`~hostseal.server.http.api.agent.evidence_for`) on a worker thread, and answered with the same
bodies and errors (:func:`~hostseal.server.http.app.error_body`); every other request goes to the
application unchanged. The routes stay in the application, so the OpenAPI document describes
both, and a server without the wrapper answers identically.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from hostseal.client.wire import EvidenceIn, VerdictOut
from hostseal.server import attestation
from hostseal.server.context import ServerContext
from hostseal.server.http.api.agent import challenge_for, evidence_for, submitted
from hostseal.server.http.app import error_body, invalid_body
from hostseal.server.http.guard import Limits, too_large

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

THREADS = 16


class BodyTooLarge(Exception):
    pass


class FastPath:
    """ASGI: the attestation requests here, everything else to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app: ASGIApp = app
        self.ctx: ServerContext = app.state.ctx
        self.state = app.state  # as the application's (tests reach ctx through it)
        # A pool of its own: anyio's hand-off to the framework's 40 threads cost more than the
        # work it carried (measured: 470 -> 610-650 attestations/s with 4, 16 or 40 threads)
        self.pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="attest")
        # SQLite answers the one read of a request from the local file in tens of µs: on the
        # event loop, without a thread hop (measured: 470 -> 830 attestations/s with the
        # challenge alone). A network database could stall the loop: threads there.
        self.inline = self.ctx.engine.dialect.name == "sqlite"
        self._loop_reader: Any = None
        self.limits: Limits = app.state.limits  # body limits and failed-authentication counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/v1/attest/evidence":
                return await self._answer(scope, receive, send, evidence=True)
            if path == "/v1/attest/challenge":
                return await self._answer(scope, receive, send, evidence=False)
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, *, evidence: bool) -> None:
        authorization = None
        limit = self.limits.body_limit(scope["path"])
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._too_large(send, limit, evidence)  # not read at all
        try:
            body = await _read(receive, limit)
        except BodyTooLarge:
            return await self._too_large(send, limit, evidence)
        try:
            if evidence:
                try:
                    model = EvidenceIn.model_validate_json(body)
                except ValidationError as exc:
                    await _send(send, *invalid_body(exc.errors()))
                    return
                if self.inline:
                    answer: Any = await self._evidence_inline(authorization, model)
                else:
                    answer = await self._run(evidence_for, self.ctx, authorization, model)
            elif self.inline:
                answer = challenge_for(self.ctx, authorization, self._reader())
            else:
                answer = await self._run(challenge_for, self.ctx, authorization)
        except Exception as exc:  # every error answered as the application answers it
            self.limits.note(scope, exc, scope["path"])  # a failed authentication: counted
            await _send(send, *error_body(exc))
            return
        await _send_raw(send, 200, answer.model_dump_json().encode())

    def _reader(self) -> Any:
        """The event loop's own SQLite connection for the agent query (one, kept: no pool
        checkout per request). In WAL mode its reads never wait for the writer."""
        if self._loop_reader is None:
            self._loop_reader = self.ctx.engine.raw_connection()
        return self._loop_reader

    async def _evidence_inline(self, authorization: str | None, body: EvidenceIn) -> VerdictOut:
        """The evidence on the event loop (SQLite): appraised here, written by the group-commit
        writer while the loop serves others. (A quote whose signature fails costs at most one
        more check, of the AK the signer index names: :mod:`hostseal.server.signers`.)"""
        ctx = self.ctx
        host = attestation.agent_host(ctx, authorization, self._reader())
        evidence = submitted(body)
        prepared = attestation.prepare_evidence(ctx, host, evidence)
        try:
            await asyncio.wrap_future(ctx.writer.submit(prepared.write))
        except IntegrityError as exc:
            attestation.settle(ctx, prepared, exc)  # raises: a replay, or the host removed
        verdict = attestation.settle(ctx, prepared, None)
        return VerdictOut(status=verdict.status, messages=verdict.messages)

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    async def _too_large(self, send: Send, limit: int, evidence: bool) -> None:
        self.limits.count_refused("evidence-body" if evidence else "body")
        await _send(send, 413, too_large(limit, evidence=evidence).to_dict())


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, body: dict[str, Any]) -> None:
    await _send_raw(send, status, json.dumps(body).encode())


async def _send_raw(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
