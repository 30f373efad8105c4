"""The dashboard's forms (POST): log in and out, alarms, hosts, revealing recovery keys.

Every form is checked for this session's CSRF token (:func:`session.posted`), the role is
checked as the REST API checks it, and the work is done by the API's own route functions, so a
change or a key read from the dashboard leaves the same audit entry as one through the API.
After a change the browser is sent back (303) to the page it came from.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from hostseal.errors import HostsealError
from hostseal.server import audit
from hostseal.server.errors import Unauthenticated
from hostseal.server.http.api import alarms as api_alarms
from hostseal.server.http.api import escrow as api_escrow
from hostseal.server.http.api import hosts as api_hosts
from hostseal.server.http.api.deps import RowId
from hostseal.server.http.api.schemas import AssignIn, CommentIn, ReasonIn
from hostseal.server.http.guard import client_address
from hostseal.server.http.web.render import WebRoute, page
from hostseal.server.http.web.session import (
    Posted,
    WebSession,
    check_csrf,
    clear_cookie,
    ctx_of,
    form_of,
    local_path,
    posted,
    sessions_of,
    set_cookie,
    visitor,
)
from hostseal.server.tokens import AGENT, USER_ROLES, authenticate, require_role, token_hash

router = APIRouter(route_class=WebRoute, include_in_schema=False)
Form = Annotated[Posted, Depends(posted)]
CHANGE = "change hosts, alarms and policies"
KEYS = "read escrowed recovery keys or the audit log"


def _back(form: Posted, default: str, done: str) -> RedirectResponse:
    target = local_path(form.get("next"), default)
    joiner = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{joiner}{urlencode({'done': done})}", status_code=303)


# --- logging in and out -------------------------------------------------------------------


def _login_form(
    request: Request, session: WebSession, *, status: int = 200, error: str = "", remedy: str = ""
) -> HTMLResponse:
    response = page(
        request,
        "login.html",
        status=status,
        session=session,
        next=local_path(request.query_params.get("next"), "/ui/"),
        error=error,
        remedy=remedy,
        notice=request.query_params.get("done", ""),
    )
    set_cookie(response, sessions_of(request), session)
    return response


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    found = visitor(request)
    if found.principal is not None:
        target = local_path(request.query_params.get("next"), "/ui/")
        return RedirectResponse(target, status_code=303)
    session = found.session or WebSession.new(None, ctx_of(request).clock.now())
    return _login_form(request, session)


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    fields = await form_of(request)
    found = visitor(request)
    check_csrf(request, found.session, fields)
    assert found.session is not None
    ctx = ctx_of(request)
    token = fields.get("token", "").strip()
    try:
        if not token:
            raise Unauthenticated(
                "Enter an API token to log in.",
                "Create one on the server: hostseal server token create --role viewer --name NAME.",
                reason="no-token",
            )
        with ctx.sessions.begin() as db:
            who = authenticate(db, f"Bearer {token}")
            if who.role not in USER_ROLES:  # an agent's or a metrics token
                raise Unauthenticated(
                    f"{'An agent' if who.role == AGENT else 'A metrics'} token cannot log in to "
                    "the dashboard.",
                    "Log in with a user token (viewer, operator or admin).",
                    reason="wrong-role",
                )
            audit.record(db, who, "web.login", now=ctx.clock.now())
    except HostsealError as err:
        reason = getattr(err, "reason", None) or "unauthenticated"  # counted and logged
        request.app.state.limits.auth_failed(
            "POST", "/ui/login", client_address(request.scope), reason
        )
        return _login_form(request, found.session, status=401, error=err.message, remedy=err.remedy)
    session = WebSession.new(token_hash(token), ctx.clock.now())  # a new id and CSRF token
    target = local_path(fields.get("next"), "/ui/")
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, sessions_of(request), session)
    return response


@router.post("/ui/logout")
def logout(request: Request, form: Form) -> RedirectResponse:
    sessions_of(request).end(form.user.session, ctx_of(request).clock.now())
    response = RedirectResponse("/ui/login?done=logged-out", status_code=303)
    clear_cookie(response)
    return response


# --- alarms and hosts -----------------------------------------------------------------------


@router.post("/ui/alarms/{alarm_id}/ack")
def acknowledge(request: Request, alarm_id: RowId, form: Form) -> RedirectResponse:
    require_role(form.user.principal, "operator", CHANGE)
    body = CommentIn(comment=form.get("comment"))
    api_alarms.acknowledge(alarm_id, body, ctx_of(request), form.user.principal)
    return _back(form, "/ui/alarms", "acknowledged")


@router.post("/ui/alarms/{alarm_id}/reset")
def reset(request: Request, alarm_id: RowId, form: Form) -> RedirectResponse:
    require_role(form.user.principal, "operator", CHANGE)
    body = CommentIn(comment=form.get("comment"))
    api_alarms.reset(alarm_id, body, ctx_of(request), form.user.principal)
    return _back(form, "/ui/alarms", "reset")


@router.post("/ui/hosts/{name}/reconnect")
def reconnect(request: Request, name: str, form: Form) -> RedirectResponse:
    require_role(form.user.principal, "operator", CHANGE)
    body = ReasonIn(reason=form.get("reason"))
    api_hosts.reconnect(name, body, ctx_of(request), form.user.principal)
    return _back(form, f"/ui/hosts/{name}", "reconnect")


@router.post("/ui/hosts/{name}/tpm-requests/{request_id}/{decision}")
def decide_tpm(
    request: Request, name: str, request_id: api_hosts.RequestId, decision: str, form: Form
) -> RedirectResponse:
    require_role(form.user.principal, "operator", CHANGE)
    if decision not in ("accept", "reject"):
        return _back(form, f"/ui/hosts/{name}", "")
    body = ReasonIn(reason=form.get("reason"))
    decide = api_hosts.accept_tpm if decision == "accept" else api_hosts.reject_tpm
    decide(name, request_id, body, ctx_of(request), form.user.principal)
    return _back(form, f"/ui/hosts/{name}", f"tpm-{decision}ed")


@router.post("/ui/hosts/{name}/approve")
def approve(request: Request, name: str, form: Form) -> RedirectResponse:
    require_role(form.user.principal, "operator", CHANGE)
    body = ReasonIn(reason=form.get("reason"))
    api_hosts.approve(name, body, ctx_of(request), form.user.principal)
    return _back(form, f"/ui/hosts/{name}", "approved")


@router.post("/ui/hosts/{name}/policy")
def assign_policy(request: Request, name: str, form: Form) -> RedirectResponse:
    require_role(form.user.principal, "operator", CHANGE)
    body = AssignIn(policy=form.get("policy") or None, reason=form.get("reason"))
    api_hosts.assign_policy(name, body, ctx_of(request), form.user.principal)
    return _back(form, f"/ui/hosts/{name}", "policy")


# --- recovery keys --------------------------------------------------------------------------


@router.post("/ui/escrow/{host}/reveal", response_class=HTMLResponse)
def reveal(request: Request, host: str, form: Form) -> HTMLResponse:
    """The host's escrowed keys, read as ``GET /v1/escrow/{host}`` reads them (audited)."""
    require_role(form.user.principal, "admin", KEYS)
    shown = api_escrow.read_host_keys(
        host, ctx_of(request), form.user.principal, form.get("reason")
    )
    return page(
        request,
        "escrow_revealed.html",
        principal=form.user.principal,
        session=form.user.session,
        host=host,
        keys=shown["keys"],
        reason=form.get("reason"),
    )
