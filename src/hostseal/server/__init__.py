"""The attestation service: inventory, attestation, alarms, recovery-key escrow, audit.

The only package that imports FastAPI and SQLAlchemy. Entry points: :func:`create_app` (the
ASGI application) and :class:`ServerSettings`; ``hostseal server run`` serves it over TLS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hostseal.server.http.app import create_app
    from hostseal.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # lazily, so that hostseal.server.client does not import FastAPI and SQLAlchemy
    if name == "create_app":
        from hostseal.server.http.app import create_app

        return create_app
    if name == "ServerSettings":
        from hostseal.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(name)
