"""HTML for the dashboard: the Jinja2 environment, pages, error pages and security headers.

Routes of the dashboard use :class:`WebRoute`: a :class:`HostsealError` becomes an HTML error
page with the error's status code, message and remedy (the API's JSON handler is left alone),
a missing session becomes a redirect to the login form (or 401 for live updates), and every
answer carries a strict Content-Security-Policy (scripts, styles and images from this server
only) and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from hostseal.errors import HostsealError
from hostseal.server.errors import Unprocessable, http_status
from hostseal.server.http.web import hostrows
from hostseal.server.http.web.session import (
    LoginRequired,
    WebSession,
    ctx_of,
    visitor,
)
from hostseal.server.tokens import Principal

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
_RANK = {"viewer": 0, "operator": 1, "admin": 2}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def when(value: datetime | str | None, now: datetime | None = None) -> str:
    """A timestamp as people read it on the dashboard: UTC, seconds, the date when not today."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    value = value.astimezone(UTC)
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    if value.date() == today:
        return value.strftime("%H:%M:%S UTC")
    return value.strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(("html", "svg")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["iso"] = iso
    env.filters["urlpart"] = lambda text: quote(str(text), safe="")
    env.filters["tojson_pretty"] = lambda data: json.dumps(data, indent=2, sort_keys=True)
    env.globals["alarm_state"] = lambda state: hostrows.ALARM_STATES.get(
        state, hostrows.Status(state, "info", "?", 9)
    )
    env.globals["query"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v})
    return env


ENV = _environment()


def may(principal: Principal | None, role: str) -> bool:
    """Whether ``principal`` has ``role`` or a higher one (for showing actions)."""
    return principal is not None and _RANK.get(principal.role, -1) >= _RANK[role]


def fragment(template: str, **context: Any) -> str:
    """A template rendered to a string (a live region, an SVG chart)."""
    return ENV.get_template(template).render(**context)


def page(
    request: Request,
    template: str,
    *,
    status: int = 200,
    principal: Principal | None = None,
    session: WebSession | None = None,
    **context: Any,
) -> HTMLResponse:
    """A full page: the layout with the navigation for ``principal``'s role."""
    html = ENV.get_template(template).render(
        request=request,
        user=principal,
        csrf=session.csrf if session else "",
        may=lambda role: may(principal, role),
        here=request.url.path,
        now=ctx_of(request).clock.now(),
        **context,
    )
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, err: HostsealError) -> HTMLResponse:
    found = visitor(request)
    return page(
        request,
        "error.html",
        status=http_status(err),
        principal=found.principal,
        session=found.session,
        error=type(err).__name__,
        message=err.message,
        remedy=err.remedy,
    )


def _form_refused(err: ValidationError) -> HostsealError:
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in err.errors()
    ]
    return Unprocessable(
        "The form was refused: " + "; ".join(problems[:5]) + ".",
        "Correct the field (names: letters, digits, '.', '-', '_'; texts: at most 1000 "
        "characters) and send the form again.",
    )


def _login_redirect(request: Request) -> Response:
    if "application/json" in request.headers.get("accept", ""):  # the live-refresh script
        return JSONResponse(
            {"error": "LoginRequired", "message": "The session ended.", "login": "/ui/login"},
            status_code=401,
        )
    if request.method != "GET":  # a form sent after the session ended: log in again first
        return RedirectResponse("/ui/login", status_code=303)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/ui/login?" + urlencode({"next": target}), status_code=303)


class WebRoute(APIRoute):
    """A dashboard route: HTML errors, login redirects, security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = _login_redirect(request)
            except HostsealError as err:
                response = error_page(request, err)
            except ValidationError as err:  # a form field past its bound (api.schemas)
                response = error_page(request, _form_refused(err))
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route
