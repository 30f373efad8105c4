"""The FastAPI application: ``create_app(settings) -> FastAPI``.

Routes are under ``/v1`` (docs/api.md), the OpenAPI document at ``/v1/openapi.json``, Prometheus
metrics at ``/metrics`` (with a token unless ``metrics_access`` is ``open``). Every request
passes the body and rate limits of :mod:`hostseal.server.http.guard` first. Every error is
``HostsealError.to_dict()`` JSON with a status code, never a traceback. While the server runs,
it keeps its heartbeat in the database and runs the scheduled jobs
(:mod:`hostseal.server.scheduler`: hosts that stopped reporting become ``not-reporting``, old
enrolments are pruned), claimed so that several instances on one database never run one twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hostseal import __version__
from hostseal.errors import HostsealError
from hostseal.server import fleetmetrics, refusals, scheduler
from hostseal.server.clock import Clock
from hostseal.server.context import ServerContext
from hostseal.server.errors import http_status
from hostseal.server.http.api import agent, alarms, escrow, hosts, instances, tokens
from hostseal.server.http.guard import Guard, Limits
from hostseal.server.http.web import mount as mount_dashboard
from hostseal.server.settings import ServerSettings
from hostseal.server.tokens import metrics_reader
from hostseal.server.verify import Verifier

log = logging.getLogger("hostseal.server")


def error_body(err: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body that answer ``err`` (the routes' handlers and the attestation
    fast path answer alike). Never a traceback."""
    if isinstance(err, HostsealError):
        status = http_status(err)
        if status >= 500:
            log.error("request failed: %s", err)
        return status, err.to_dict()
    if isinstance(err, OperationalError):
        # the database restarting or unreachable: the transaction was rolled back, nothing kept
        log.error("database unavailable: %s", str(err.orig).strip().splitlines()[0])
        return _body(
            503,
            "DatabaseUnavailable",
            "The server could not reach its database; nothing of this request was kept.",
            "Retry in a moment (agents do); if it persists, check the database server.",
        )
    log.error("internal error", exc_info=err)
    return _body(
        500,
        "InternalError",
        f"The server failed to handle the request ({type(err).__name__}).",
        "See the server's log; report it if it persists.",
    )


def invalid_body(errors: Sequence[Any]) -> tuple[int, dict[str, Any]]:
    """422 RequestInvalid for pydantic's errors of a request body."""
    problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors]
    return _body(
        422,
        "RequestInvalid",
        "The request does not have the expected shape: " + "; ".join(problems[:5]),
        "Check the request against docs/api.md (or GET /v1/openapi.json).",
        problems=problems,
    )


def _body(
    status: int, error: str, message: str, remedy: str, **extra: Any
) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "message": message, "remedy": remedy, **extra}


def _json(status: int, error: str, message: str, remedy: str, **extra: Any) -> JSONResponse:
    return _response(_body(status, error, message, remedy, **extra))


def _response(answer: tuple[int, dict[str, Any]]) -> JSONResponse:
    return JSONResponse(answer[1], status_code=answer[0])


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HostsealError)
    async def hostseal_error(request: Request, err: HostsealError) -> JSONResponse:
        request.app.state.limits.note(request.scope, err)  # a failed authentication: counted
        return _response(error_body(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _response(invalid_body(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 404:
            return _json(404, "NotFound", "There is no such endpoint.", "See GET /v1/openapi.json.")
        if err.status_code == 405:
            return _json(405, "MethodNotAllowed", str(err.detail), "See GET /v1/openapi.json.")
        return _json(
            err.status_code,
            "HttpError",
            str(err.detail),
            "Check the request against docs/api.md (or GET /v1/openapi.json).",
        )

    @app.exception_handler(OperationalError)
    async def database_unavailable(_: Request, err: OperationalError) -> JSONResponse:
        return _response(error_body(err))

    @app.exception_handler(Exception)
    async def crashed(_: Request, err: Exception) -> JSONResponse:
        return _response(error_body(err))


def run_housekeeping(ctx: ServerContext) -> list[str]:
    """Every background job once, now: mark stale hosts, prune old enrolments."""
    return scheduler.housekeeping(ctx)


def create_app(
    settings: ServerSettings,
    *,
    clock: Clock | None = None,
    verifier: Verifier | None = None,
    context: ServerContext | None = None,
) -> FastAPI:
    """The application; opens (creates, migrates) the data directory and database now."""
    ctx = context or ServerContext.open(settings, clock=clock, verifier=verifier)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        background = scheduler.Background(ctx)
        await background.start()
        try:
            yield
        finally:
            await background.stop()
            ctx.close()

    app = FastAPI(
        title="hostseal attestation service",
        version=__version__,
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.limits = limits = Limits(settings)
    app.add_middleware(Guard, limits=limits)  # body limits, per-address rates (server.guard)
    _install_error_handlers(app)
    for router in (agent.router, hosts.router, alarms.router, escrow.router):
        app.include_router(router, prefix="/v1")
    app.include_router(instances.router, prefix="/v1")
    app.include_router(tokens.router, prefix="/v1")  # admin: API tokens
    v1 = (agent.router, hosts.router, alarms.router, escrow.router, instances.router)
    limits.name_routes("/v1", *v1, tokens.router)  # labels of failed authentications
    mount_dashboard(app)  # web dashboard: docs/dashboard.md

    @app.get("/metrics", response_class=PlainTextResponse, tags=["metrics"])
    def metrics(request: Request) -> PlainTextResponse:
        """Prometheus text. Needs a token (``metrics`` role or any user role) unless the server
        runs with ``HOSTSEAL_SERVER_METRICS=open`` (docs/server.md)."""
        with ctx.sessions() as session:
            if settings.metrics_access == "token":
                metrics_reader(session, request.headers.get("authorization"))
            text = fleetmetrics.metrics(session) + instances.metrics(session, ctx.clock.now())
        text += refusals.metrics(ctx.refusals)
        text += limits.metrics()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return app
