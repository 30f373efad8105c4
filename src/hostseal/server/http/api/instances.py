"""``GET /v1/instances``: the server instances sharing this database, and the scheduled jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from hostseal.server import instances
from hostseal.server.http.api.deps import Ctx, Viewer

router = APIRouter(tags=["instances"])


@router.get("/instances")
def list_instances(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    """Every instance (alive, not-responding or stopped, with its heartbeat) and every job."""
    with ctx.sessions() as session:
        return {
            "instances": instances.list_instances(session, ctx.clock.now()),
            "jobs": instances.list_jobs(session),
        }


def metrics(session: Session, now: datetime) -> str:
    """The instances' lines of ``/metrics``."""
    return instances.metrics(session, now)
