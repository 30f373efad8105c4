"""API tokens: random, shown once, stored as SHA-256; one role each.

Roles, each including the ones before it: ``viewer`` < ``operator`` < ``admin``. ``agent`` tokens
are separate: issued by enrolment, bound to one host, accepted only by the agent endpoints.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostseal.server.errors import Conflict, Forbidden, NotFound, Unauthenticated, Unprocessable
from hostseal.server.storage.models import Host, Token

USER_ROLES = ("viewer", "operator", "admin")
AGENT = "agent"
METRICS = "metrics"  # reads /metrics and nothing else (for Prometheus)
TOKEN_ROLES = (*USER_ROLES, METRICS)  # the roles ``token create`` issues
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")
_RANK = {role: rank for rank, role in enumerate(USER_ROLES)}
PREFIX = "hst_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role, and for an agent its host."""

    name: str
    role: str
    host_id: int | None = None
    host_name: str | None = None


SYSTEM = Principal("hostseal", "system")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create_token(session: Session, *, name: str, role: str, now: datetime) -> str:
    """A new user token; the plaintext is returned once and never stored."""
    if role not in TOKEN_ROLES:
        raise Unprocessable(f"{role!r} is not a role.", f"Use one of: {', '.join(TOKEN_ROLES)}.")
    if not _TOKEN_NAME.fullmatch(name):
        raise Unprocessable(
            f"{name[:100]!r} is not a token name.",
            "Name it after its holder (letters, digits, '_', '.', '@', '+', '-'; at most 100 "
            "characters, starting with a letter or digit): --name alice.",
        )
    taken = session.scalar(
        select(Token).where(Token.name == name, Token.revoked_at.is_(None), Token.role != AGENT)
    )
    if taken is not None:
        raise Conflict(
            f"A token named {name!r} exists already.",
            f"Choose another name, or revoke it first: hostseal server token revoke {name}.",
        )
    token = new_token()
    session.add(Token(name=name, role=role, token_sha256=token_hash(token), created_at=now))
    return token


def issue_agent_token(session: Session, host: Host, now: datetime) -> str:
    """Revoke the host's previous agent tokens and issue a new one."""
    for old in session.scalars(
        select(Token).where(Token.host_id == host.id, Token.revoked_at.is_(None))
    ):
        old.revoked_at = now
    token = new_token()
    session.add(
        Token(
            name=f"agent:{host.name}",
            role=AGENT,
            token_sha256=token_hash(token),
            host_id=host.id,
            created_at=now,
        )
    )
    return token


def revoke_token(session: Session, name: str, now: datetime) -> int:
    rows = list(
        session.scalars(
            select(Token).where(Token.name == name, Token.revoked_at.is_(None), Token.role != AGENT)
        )
    )
    if not rows:
        raise NotFound(
            f"No active token is named {name!r}.", "List them: hostseal server token list."
        )
    for row in rows:
        row.revoked_at = now
    return len(rows)


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).where(Token.role != AGENT).order_by(Token.id)))


def authenticate(session: Session, header: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer`` header; 401 when missing or unknown
    (:class:`Unauthenticated` with its ``reason``: no-token, malformed-header, unknown-token,
    revoked-token, host-removed)."""
    if not header:
        raise Unauthenticated(
            "This request needs a token: send 'Authorization: Bearer <token>'.",
            "Create a token on the server with 'hostseal server token create --role viewer "
            "--name NAME' and pass it in HOSTSEAL_TOKEN.",
            reason="no-token",
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated(
            "The Authorization header is not 'Bearer <token>'.",
            "Send the token as: Authorization: Bearer <token>.",
            reason="malformed-header",
        )
    digest = token_hash(value.strip())
    row = session.scalar(
        select(Token).where(Token.token_sha256 == digest, Token.revoked_at.is_(None))
    )
    if row is None:
        revoked = session.scalar(select(Token.id).where(Token.token_sha256 == digest).limit(1))
        raise Unauthenticated(
            "The token is not known to this server, or it was revoked.",
            "Check HOSTSEAL_TOKEN (or --token-file); create a new token if it was revoked.",
            reason="unknown-token" if revoked is None else "revoked-token",
        )
    if row.role == AGENT:
        host = session.get(Host, row.host_id) if row.host_id is not None else None
        if host is None:
            raise Unauthenticated(
                "This agent token's host was removed from the server.",
                "Enrol the host again: hostseal agent enrol.",
                reason="host-removed",
            )
        return Principal(row.name, AGENT, host.id, host.name)
    return Principal(row.name, row.role)


def require_role(principal: Principal, role: str, doing: str) -> None:
    """403 unless ``principal`` has ``role`` or a higher one (agents have no user role)."""
    if principal.role == AGENT:
        raise Forbidden(
            f"An agent token cannot {doing}: agent tokens are accepted only by the agent "
            "endpoints.",
            "Use a user token (hostseal server token create).",
            reason="wrong-role",
        )
    if _RANK.get(principal.role, -1) < _RANK[role]:
        raise Forbidden(
            f"Only the {role} role may {doing}; the token {principal.name!r} has the "
            f"{principal.role} role.",
            f"Ask an administrator for a token with the {role} role.",
            reason="wrong-role",
        )


def metrics_reader(session: Session, header: str | None) -> Principal:
    """The caller of ``/metrics`` (when it needs a token): a ``metrics`` or user token."""
    principal = authenticate(session, header)
    if principal.role not in TOKEN_ROLES:
        raise Forbidden(
            "An agent token cannot read /metrics.",
            "Give Prometheus a token of the metrics role: hostseal server token create "
            "--role metrics --name prometheus.",
            reason="wrong-role",
        )
    return principal


def require_agent(principal: Principal) -> tuple[int, str]:
    """The host id and name of an agent token; 403 for user tokens."""
    if principal.role != AGENT or principal.host_id is None or principal.host_name is None:
        raise Forbidden(
            "Only a host's agent may call this endpoint; this is a user token.",
            "Agents get their token from enrolment (POST /v1/enrol/finish).",
            reason="wrong-role",
        )
    return principal.host_id, principal.host_name
