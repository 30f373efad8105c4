"""Operations on the server's data directory, without a running server: serve it, manage
tokens, find the CA certificate. Used by ``hostseal server ...``."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from hostseal.server import audit, datadir, tokens
from hostseal.server.context import ServerContext
from hostseal.server.http.tls import TlsFiles, ensure_tls
from hostseal.server.settings import ServerSettings


def _local_principal() -> tokens.Principal:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return tokens.Principal(f"local:{user}", "admin")


def create_token(settings: ServerSettings, *, role: str, name: str) -> str:
    """A new user token (printed once by the CLI); audited."""
    ctx = ServerContext.open(settings)
    try:
        now = ctx.clock.now()
        with ctx.sessions.begin() as session:
            token = tokens.create_token(session, name=name, role=role, now=now)
            audit.record(
                session,
                _local_principal(),
                "token.created",
                now=now,
                details={"name": name, "role": role},
            )
        return token
    finally:
        ctx.close()


def list_tokens(settings: ServerSettings) -> list[dict[str, Any]]:
    ctx = ServerContext.open(settings)
    try:
        with ctx.sessions() as session:
            return [
                {
                    "name": t.name,
                    "role": t.role,
                    "created_at": t.created_at.isoformat(),
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                }
                for t in tokens.list_tokens(session)
            ]
    finally:
        ctx.close()


def revoke_token(settings: ServerSettings, name: str) -> int:
    ctx = ServerContext.open(settings)
    try:
        now = ctx.clock.now()
        with ctx.sessions.begin() as session:
            count = tokens.revoke_token(session, name, now)
            audit.record(
                session, _local_principal(), "token.revoked", now=now, details={"name": name}
            )
        return count
    finally:
        ctx.close()


def ca_certificate(settings: ServerSettings) -> Path | None:
    """The CA certificate clients should trust (generated with the TLS material if needed)."""
    datadir.prepare(settings.data_dir)
    return ensure_tls(settings).ca


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the service over TLS until interrupted."""
    import uvicorn

    from hostseal.server.http.app import create_app
    from hostseal.server.http.fastpath import FastPath

    datadir.prepare(settings.data_dir)
    tls: TlsFiles = ensure_tls(settings)
    app = create_app(settings)
    host, port = settings.bind_address
    uvicorn.run(
        FastPath(app),  # the agents' attestation requests in front of the framework
        host=host,
        port=port,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        log_level=log_level,
        access_log=log_level in ("debug", "trace"),  # a line per agent request: only to debug
        lifespan="on",
        server_header=False,
    )
