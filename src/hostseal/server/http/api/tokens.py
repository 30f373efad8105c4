"""Admin endpoints: API tokens. A new token is shown once (it is stored as a hash), lists never
show a secret, and creating or revoking one is audited with the admin's reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from hostseal.server import audit, tokens
from hostseal.server.http.api.deps import Ctx, role
from hostseal.server.http.api.schemas import TokenCreated, TokenIn, TokenOut
from hostseal.server.tokens import Principal

router = APIRouter(tags=["tokens"])

TokenAdmin = Annotated[Principal, Depends(role("admin", "manage API tokens"))]
TokenName = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(ctx: Ctx, _: TokenAdmin) -> list[TokenOut]:
    """Every user token (active and revoked): name, role, dates; never the token."""
    with ctx.sessions() as session:
        return [
            TokenOut(
                name=t.name,
                role=t.role,
                created_at=t.created_at.isoformat(),
                revoked_at=t.revoked_at.isoformat() if t.revoked_at else None,
            )
            for t in tokens.list_tokens(session)
        ]


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenIn, response: Response, ctx: Ctx, who: TokenAdmin) -> TokenCreated:
    """A new user token, returned this once (audited with the reason; not the token)."""
    stated = audit.require_reason(body.reason, "create an API token")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        value = tokens.create_token(session, name=body.name, role=body.role, now=now)
        audit.record(
            session,
            who,
            "token.created",
            now=now,
            reason=stated,
            details={"name": body.name, "role": body.role},
        )
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(name=body.name, role=body.role, token=value)


@router.delete("/tokens/{name}")
def revoke_token(name: TokenName, ctx: Ctx, who: TokenAdmin, reason: str = "") -> dict[str, object]:
    """Revoke the active user token ``name`` (audited with the reason); it stops working at
    once. Agent tokens are not revoked here: remove or reconnect the host instead."""
    stated = audit.require_reason(reason, "revoke an API token")
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        roles = sorted(
            t.role for t in tokens.list_tokens(session) if t.name == name and t.revoked_at is None
        )
        count = tokens.revoke_token(session, name, now)
        audit.record(
            session,
            who,
            "token.revoked",
            now=now,
            reason=stated,
            details={"name": name, "roles": roles},
        )
    return {"name": name, "revoked": count}
