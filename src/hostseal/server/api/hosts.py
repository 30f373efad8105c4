"""User endpoints for hosts and reference policies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hostseal.server import enrol, policies, views
from hostseal.server.api.deps import Ctx, Operator, Viewer
from hostseal.server.api.schemas import AssignIn, CaptureIn, ReasonIn

router = APIRouter(tags=["hosts"])


@router.get("/hosts")
def list_hosts(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """Every host with its status, last verdict and messages, EK/AK, secure config, escrow."""
    with ctx.sessions() as session:
        return views.list_hosts(session)


@router.get("/hosts/{name}")
def show_host(name: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    """One host, with its verdict history."""
    with ctx.sessions() as session:
        return views.host_to_dict(session, enrol.get_host(session, name), history=True)


def _shown(ctx: Ctx, name: str) -> dict[str, Any]:
    with ctx.sessions() as session:
        return views.host_to_dict(session, enrol.get_host(session, name))


@router.post("/hosts/{name}/reconnect")
def reconnect(name: str, body: ReasonIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Accept the host's next enrolment with a new EK (audited; a reason is required)."""
    enrol.reconnect(ctx, name, who, body.reason)
    return _shown(ctx, name)


@router.post("/hosts/{name}/approve")
def approve(name: str, body: ReasonIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Approve a host whose EK has no trusted chain (audited; a reason is required)."""
    enrol.approve(ctx, name, who, body.reason)
    return _shown(ctx, name)


@router.delete("/hosts/{name}")
def remove(name: str, ctx: Ctx, who: Operator, reason: str = "") -> dict[str, Any]:
    """Remove the host (audited). Its escrowed recovery keys are kept."""
    enrol.remove(ctx, name, who, reason)
    return {"removed": name}


@router.put("/hosts/{name}/policy")
def assign_policy(name: str, body: AssignIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Assign a reference policy to the host (null: none). Used from its next attestation."""
    policies.assign(ctx, name, body.policy, who)
    return _shown(ctx, name)


@router.get("/policies")
def list_policies(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    return policies.list_policies(ctx)


@router.get("/policies/{name}")
def show_policy(name: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return policies.get_policy(ctx, name)


@router.put("/policies/{name}")
def set_policy(name: str, body: dict[str, Any], ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Create or replace a policy; an empty or accept-everything policy is refused (422)."""
    return policies.put_policy(ctx, name, body, who)


@router.post("/policies/capture")
def capture_policy(body: CaptureIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """A policy from the host's last verified evidence, assigned to that host."""
    return policies.capture(ctx, body.name, body.host, who)
