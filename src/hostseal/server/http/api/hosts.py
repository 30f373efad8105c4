"""User endpoints for hosts and reference policies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Response

from hostseal.server import enrol, enroltokens, hostviews, policies, reporting
from hostseal.server.http.api.deps import Admin, Ctx, NamePath, Operator, ReasonQuery, RowId, Viewer
from hostseal.server.http.api.schemas import AssignIn, CaptureIn, EnrolmentTokenIn, ReasonIn

router = APIRouter(tags=["hosts"])


@router.get("/hosts")
def list_hosts(ctx: Ctx, _: Viewer, removed: bool = False) -> list[dict[str, Any]]:
    """Every host with its status, last verdict and messages, EK/AK, secure config, escrow,
    TPM change requests; with ``removed=true`` the removed hosts (tombstones) instead."""
    with ctx.sessions() as session:
        hosts = hostviews.list_hosts(session, removed=removed)
    return [reporting.shown(h, ctx.clock.now(), ctx.settings) for h in hosts]


@router.get("/hosts/{name}")
def show_host(name: NamePath, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    """One host, with its verdict history and TPM change requests; a name with no host but a
    removed one shows the most recently removed (status ``removed``)."""
    with ctx.sessions() as session:
        host = enrol.get_host_or_tombstone(session, name)
        shown = hostviews.host_to_dict(session, host, history=True)
    return reporting.shown(shown, ctx.clock.now(), ctx.settings)


def _shown(ctx: Ctx, name: str) -> dict[str, Any]:
    with ctx.sessions() as session:
        return hostviews.host_to_dict(session, enrol.get_host(session, name))


@router.post("/hosts/{name}/reconnect")
def reconnect(name: NamePath, body: ReasonIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Accept the host's next enrolment with any new EK, before a planned TPM or board
    replacement (audited; a reason is required). An EK without a trusted vendor chain then
    still waits for approval."""
    enrol.reconnect(ctx, name, who, body.reason)
    return _shown(ctx, name)


RequestId = RowId


@router.post("/hosts/{name}/tpm-requests/{request_id}/accept")
def accept_tpm(
    name: NamePath, request_id: RequestId, body: ReasonIn, ctx: Ctx, who: Operator
) -> dict[str, Any]:
    """Accept a TPM change request: that TPM's next enrolment (proving possession again)
    replaces the host's EK; without a trusted vendor chain it then waits for approval
    (audited with the old and new EK fingerprints; a reason is required)."""
    enrol.accept_tpm(ctx, name, request_id, who, body.reason)
    return _shown(ctx, name)


@router.post("/hosts/{name}/tpm-requests/{request_id}/reject")
def reject_tpm(
    name: NamePath, request_id: RequestId, body: ReasonIn, ctx: Ctx, who: Operator
) -> dict[str, Any]:
    """Reject a TPM change request: that TPM is refused under this name (audited; a reason is
    required). The host is not changed."""
    enrol.reject_tpm(ctx, name, request_id, who, body.reason)
    return _shown(ctx, name)


@router.post("/hosts/{name}/approve")
def approve(name: NamePath, body: ReasonIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Approve a host whose EK has no trusted chain (audited; a reason is required)."""
    enrol.approve(ctx, name, who, body.reason)
    return _shown(ctx, name)


@router.post("/enrolment-tokens", status_code=201)
def enrolment_token(
    body: EnrolmentTokenIn, ctx: Ctx, who: Admin, response: Response
) -> dict[str, Any]:
    """A one-time enrolment token for one host name, or for ``uses`` new hosts (a batch); shown
    this once; audited with the reason (never the token). Needed to enrol when the server runs
    with ``HOSTSEAL_SERVER_ENROLMENT=token``."""
    made = enroltokens.make(
        ctx, who, host=body.host, uses=body.uses, lifetime=timedelta(hours=body.hours),
        reason=body.reason,
    )  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return {
        "token": made.token,
        "host": made.host,
        "uses": made.uses,
        "expires_at": made.expires_at.isoformat(),
        "enrolment": ctx.settings.enrolment,
    }


@router.delete("/hosts/{name}")
def remove(name: NamePath, ctx: Ctx, who: Operator, reason: ReasonQuery = "") -> dict[str, Any]:
    """Remove the host (``reason`` required; audited with the EK fingerprint and last status).
    The host is kept as a tombstone with its verdicts and alarms (``GET /v1/hosts?removed=true``)
    and its agent tokens are revoked; its escrowed recovery keys are kept. The name may enrol
    again as a new host."""
    enrol.remove(ctx, name, who, reason)
    return {"removed": name}


@router.put("/hosts/{name}/policy")
def assign_policy(name: NamePath, body: AssignIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """Assign a reference policy to the host (null: none). Used from its next attestation.
    Audited with the reason (required), the old and new policy and what the change loosens."""
    policies.assign(ctx, name, body.policy, who, body.reason)
    return _shown(ctx, name)


@router.get("/policies")
def list_policies(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    return policies.list_policies(ctx)


@router.get("/policies/{name}")
def show_policy(name: NamePath, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return policies.get_policy(ctx, name)


@router.get("/policies/{name}/history")
def policy_history(name: NamePath, ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """The policy's audited changes and assignments, newest first."""
    with ctx.sessions() as session:
        return policies.history(session, name)


@router.put("/policies/{name}")
def set_policy(
    name: NamePath, body: dict[str, Any], ctx: Ctx, who: Operator, reason: ReasonQuery = ""
) -> dict[str, Any]:
    """Create or replace a policy (the body is the document); ``reason`` (query, required) is
    audited with the old and new digests and what the change loosens or tightens. An empty or
    accept-everything policy is refused (422)."""
    return policies.put_policy(ctx, name, body, who, reason)


@router.post("/policies/capture")
def capture_policy(body: CaptureIn, ctx: Ctx, who: Operator) -> dict[str, Any]:
    """A policy from the host's last verified evidence, assigned to that host."""
    return policies.capture(ctx, body.name, body.host, who, body.reason)
