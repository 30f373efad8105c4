"""The attestation service: inventory, attestation, alarms, recovery-key escrow, audit.

The only package that imports FastAPI and SQLAlchemy. Entry points: :func:`create_app` (the
ASGI application) and :class:`ServerSettings`; ``hostseal server run`` serves it over TLS.
Hosts and the admin CLI reach it through :mod:`hostseal.client`, which imports nothing of it.
"""

from __future__ import annotations

from hostseal.server.http.app import create_app
from hostseal.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
