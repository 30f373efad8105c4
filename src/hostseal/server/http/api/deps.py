"""Shared pieces of the routes: the server context, the caller, base64 fields."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hostseal.client.wire import MAX_NAME
from hostseal.server.context import ServerContext
from hostseal.server.errors import EvidenceMalformed
from hostseal.server.http.api.schemas import MAX_TEXT, NAME_PATTERN
from hostseal.server.tokens import Principal, authenticate, require_agent, require_role

bearer = HTTPBearer(auto_error=False, description="A user token or an agent token.")

# Path and query parameters, bounded before they reach the database: ids within its integer
# range (PostgreSQL INTEGER), names by the host-name rule (a full match), texts by length.
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
NamePath = Annotated[str, Path(max_length=MAX_NAME, pattern=NAME_PATTERN)]
NameQuery = Annotated[str | None, Query(max_length=MAX_NAME, pattern=NAME_PATTERN)]
ReasonQuery = Annotated[str, Query(max_length=MAX_TEXT)]


async def get_ctx(request: Request) -> ServerContext:
    """(async: FastAPI would run a sync dependency on a worker thread, a hop per request)"""
    return context_of(request)


def context_of(request: Request) -> ServerContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ServerContext)
    return ctx


Ctx = Annotated[ServerContext, Depends(get_ctx)]


def caller(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    with ctx.sessions() as session:
        return authenticate(session, header)


Caller = Annotated[Principal, Depends(caller)]


def role(name: str, doing: str) -> Callable[[Principal], Principal]:
    """A dependency: the caller, who must have role ``name`` (or a higher one)."""

    def check(principal: Caller) -> Principal:
        require_role(principal, name, doing)
        return principal

    return check


Viewer = Annotated[Principal, Depends(role("viewer", "read the inventory"))]
Operator = Annotated[Principal, Depends(role("operator", "change hosts, alarms and policies"))]
Admin = Annotated[Principal, Depends(role("admin", "read escrowed recovery keys or the audit log"))]


def agent(principal: Caller) -> Principal:
    require_agent(principal)
    return principal


Agent = Annotated[Principal, Depends(agent)]


def b64(value: str, field: str) -> bytes:
    """Standard base64 (padded) -> bytes; 422 naming the field otherwise."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceMalformed(
            f"The field {field!r} is not base64 (standard alphabet, padded).",
            "Encode binary values with standard base64, as docs/api.md says.",
        ) from None


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
