"""Dashboard sessions: an opaque cookie sealed with the server key, and a CSRF token per session.

A person logs in with an API token (the same tokens and roles as the REST API). The browser
then holds one cookie, ``__Host-hostseal-session`` (``HttpOnly``, ``Secure``,
``SameSite=Strict``, ``Path=/``): its value is sealed with AES-256-GCM under the escrow server
key (:meth:`ServerKey.seal`), so it is opaque to the browser, cannot be forged and reveals
nothing. It carries the SHA-256 of the API token (never the token), a random session id and the
session's CSRF token. Every request looks the token up again, so revoking the token ends its
sessions at once and the role is always the token's current one.

Every POST needs the CSRF token in a form field (``csrf``) that matches the session's, on top of
``SameSite=Strict``; a request the browser marks as cross-site, or whose ``Origin`` is not this
server, is refused as well. Sessions end after :data:`LIFETIME`; logging out deletes the cookie
and remembers the session id as ended (in this server process) until it would have expired.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from fastapi import Request, Response
from sqlalchemy import select

from hostseal.errors import HostsealError
from hostseal.server.context import ServerContext
from hostseal.server.errors import Forbidden, ServerError
from hostseal.server.serverkey import Sealed, ServerKey
from hostseal.server.storage.models import Token
from hostseal.server.tokens import USER_ROLES, Principal

COOKIE = "__Host-hostseal-session"
LIFETIME = timedelta(hours=8)
_CONTEXT = b"hostseal web session v1"
_MAX_FORM = 64 * 1024


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, live updates answer 401."""


class CsrfRefused(Forbidden):
    """A form POST without this session's CSRF token, or from another site."""


class FormRefused(ServerError):
    """A POST body that is not a small URL-encoded form."""

    http_status = 415


@dataclass(frozen=True)
class WebSession:
    sid: str
    csrf: str
    token_sha256: str | None
    expires_at: int

    @classmethod
    def new(cls, token_sha256: str | None, now: datetime) -> WebSession:
        return cls(
            secrets.token_urlsafe(16),
            secrets.token_urlsafe(32),
            token_sha256,
            int((now + LIFETIME).timestamp()),
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Sessions:
    """Seals and opens session cookies; remembers sessions ended by logging out."""

    server_key: ServerKey
    ended: dict[str, int] = field(default_factory=dict)

    def seal(self, session: WebSession) -> str:
        data = {
            "sid": session.sid,
            "csrf": session.csrf,
            "tok": session.token_sha256,
            "exp": session.expires_at,
        }
        payload = json.dumps(data, separators=(",", ":")).encode()
        sealed = self.server_key.seal(payload, _CONTEXT)
        parts = (sealed.server_key_id, _b64(sealed.wrapped_data_key), _b64(sealed.ciphertext))
        return ".".join(parts)

    def open(self, value: str | None, now: datetime) -> WebSession | None:
        """The session in a cookie, or None when it is missing, forged, expired or ended."""
        if not value or len(value) > 4096:
            return None
        try:
            key_id, wrapped, ciphertext = value.split(".")
            sealed = Sealed(_unb64(wrapped), _unb64(ciphertext), key_id)
            data = json.loads(self.server_key.open(sealed, _CONTEXT))
            token = data["tok"]
            session = WebSession(
                str(data["sid"]),
                str(data["csrf"]),
                None if token is None else str(token),
                int(data["exp"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error, HostsealError):
            return None
        stamp = int(now.timestamp())
        if session.expires_at <= stamp or session.sid in self.ended:
            return None
        return session

    def end(self, session: WebSession, now: datetime) -> None:
        stamp = int(now.timestamp())
        self.ended = {sid: exp for sid, exp in self.ended.items() if exp > stamp}
        self.ended[session.sid] = session.expires_at


def sessions_of(request: Request) -> Sessions:
    found = request.app.state.web_sessions
    assert isinstance(found, Sessions)
    return found


def ctx_of(request: Request) -> ServerContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, ServerContext)
    return ctx


def set_cookie(response: Response, sessions: Sessions, session: WebSession) -> None:
    response.set_cookie(
        COOKIE,
        sessions.seal(session),
        max_age=int(LIFETIME.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def current_session(request: Request) -> WebSession | None:
    return sessions_of(request).open(request.cookies.get(COOKIE), ctx_of(request).clock.now())


def principal_of(ctx: ServerContext, session: WebSession | None) -> Principal | None:
    """Who the session belongs to: its token's name and current role (None: not logged in)."""
    if session is None or session.token_sha256 is None:
        return None
    with ctx.sessions() as db:
        row = db.scalar(
            select(Token).where(
                Token.token_sha256 == session.token_sha256, Token.revoked_at.is_(None)
            )
        )
        if row is None or row.role not in USER_ROLES:
            return None
        return Principal(row.name, row.role)


@dataclass(frozen=True)
class Visitor:
    """The session and the person behind a request (``principal`` None: not logged in)."""

    session: WebSession | None
    principal: Principal | None


def visitor(request: Request) -> Visitor:
    session = current_session(request)
    return Visitor(session, principal_of(ctx_of(request), session))


@dataclass(frozen=True)
class User:
    """A logged-in person."""

    session: WebSession
    principal: Principal


def user(request: Request) -> User:
    """The logged-in person; :class:`LoginRequired` otherwise."""
    found = visitor(request)
    if found.session is None or found.principal is None:
        raise LoginRequired()
    return User(found.session, found.principal)


def _same_origin(request: Request) -> bool:
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.scheme == request.url.scheme and parts.netloc == request.headers.get("host")


async def form_of(request: Request) -> dict[str, str]:
    """A small URL-encoded form body (no multipart: the dashboard's forms are text only)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefused(
            "The dashboard accepts only URL-encoded forms.", "Submit the form from the page."
        )
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise FormRefused("The form is too large.", "Shorten the comment or reason.")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefused("The form cannot be read.", "Submit the form from the page.") from exc
    return {name: values[-1] for name, values in fields.items()}


def check_csrf(request: Request, session: WebSession | None, fields: dict[str, str]) -> None:
    """Refuse a POST without this session's CSRF token or from another site."""
    sent = fields.get("csrf", "")
    if (
        session is None
        or not sent
        or not hmac.compare_digest(sent.encode(), session.csrf.encode())
        or not _same_origin(request)
    ):
        raise CsrfRefused(
            "The form was refused: it does not carry this session's security token (CSRF), or "
            "it was sent from another site.",
            "Reload the page and submit the form again; log in again if your session ended.",
        )


@dataclass(frozen=True)
class Posted:
    """A checked POST: who sent it and its fields."""

    user: User
    fields: dict[str, str]

    def get(self, name: str) -> str:
        return self.fields.get(name, "").strip()


async def posted(request: Request) -> Posted:
    """A form POST by a logged-in person, with a valid CSRF token."""
    fields = await form_of(request)
    found = visitor(request)
    check_csrf(request, found.session, fields)
    if found.session is None or found.principal is None:
        raise LoginRequired()
    return Posted(User(found.session, found.principal), fields)


def local_path(target: str | None, default: str) -> str:
    """``target`` if it is a path of the dashboard (no open redirects), else ``default``."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return default
