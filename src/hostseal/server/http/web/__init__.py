"""The web dashboard of the attestation service, served by ``hostseal server`` itself.

Server-rendered pages (Jinja2) under ``/ui/``, a small script of our own that refreshes the
overview and host pages in place, CSS and nothing else: every asset is served from this package
(``/ui/static/``), nothing is loaded from elsewhere. People log in with an API token and have
its role (viewer, operator, admin), as with the REST API. See docs/dashboard.md.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from hostseal.server.http.web import actions, pages
from hostseal.server.http.web.render import SECURITY_HEADERS, STATIC
from hostseal.server.http.web.session import Sessions


class _Static(StaticFiles):
    """Static files with the dashboard's security headers (and revalidation, not no-store)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k != "Cache-Control"
                ]
                headers.append((b"cache-control", b"no-cache"))
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    """Add the dashboard to the service's application (``app.state.ctx`` must be set)."""
    app.state.web_sessions = Sessions(app.state.ctx.server_key)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/ui/static", _Static(directory=STATIC), name="ui-static")
