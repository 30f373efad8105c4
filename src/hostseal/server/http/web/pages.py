"""The dashboard's pages (GET) and their live regions.

Pages that update themselves (the overview and a host's page) are made of regions, each a
template of its own; ``/ui/live/...`` answers the same regions as JSON, and the page's script
swaps those that changed, every few seconds, without reloading the page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from hostseal.server import alarms, audit, enrol, escrow, hostviews, policies
from hostseal.server.context import ServerContext
from hostseal.server.http.web import chart, evidence, hostrows
from hostseal.server.http.web.render import WebRoute, fragment, may, page
from hostseal.server.http.web.session import User, ctx_of, user
from hostseal.server.storage.models import EscrowedKey, Host, StoredVerdict
from hostseal.server.tokens import require_role

router = APIRouter(route_class=WebRoute, include_in_schema=False)
LoggedIn = Annotated[User, Depends(user)]
READ = "read the inventory"
ADMIN = "read escrowed recovery keys or the audit log"
CHART_TTL = 15.0
ALARM_STATES = {
    "active": "Active (raised or acknowledged)",
    "raised": "Raised",
    "acknowledged": "Acknowledged",
    "cleared": "Cleared",
    "all": "All",
}


def _viewer(who: User) -> None:
    require_role(who.principal, "viewer", READ)


def _common(request: Request, who: User) -> dict[str, Any]:
    """What every template of a logged-in page needs (live regions included)."""
    return {
        "user": who.principal,
        "csrf": who.session.csrf,
        "may": lambda role: may(who.principal, role),
        "now": ctx_of(request).clock.now(),
        "here": request.url.path,
    }


# --- the overview -------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewQuery:
    status: str
    text: str
    sort: str
    descending: bool

    @classmethod
    def of(cls, request: Request) -> OverviewQuery:
        params = request.query_params
        status = params.get("status", "")
        sort = params.get("sort", "status")
        return cls(
            status if status in hostrows.FILTERS else "",
            params.get("q", "")[:200],
            sort if sort in hostrows.SORTS else "status",
            params.get("order") == "desc",
        )


def _fleet_chart(request: Request, session: Session, now: datetime) -> chart.FleetChart:
    """The fleet chart, computed again when a verdict arrives or every ``CHART_TTL`` s."""
    key = (
        session.scalar(select(func.max(StoredVerdict.id))),
        session.scalar(select(func.count(Host.id)).where(Host.removed_at.is_(None))),
    )
    cached = getattr(request.app.state, "web_chart", None)
    if cached is not None and cached[0] == key and time.monotonic() - cached[1] < CHART_TTL:
        found: chart.FleetChart = cached[2]
        return found
    since = now - chart.WINDOW
    before = (
        select(func.max(StoredVerdict.id))
        .where(StoredVerdict.at < since)
        .group_by(StoredVerdict.host_id)
    )
    rows = session.execute(
        select(StoredVerdict.host_id, StoredVerdict.at, StoredVerdict.status)
        .join(Host, Host.id == StoredVerdict.host_id)
        .where(
            Host.removed_at.is_(None), or_(StoredVerdict.at >= since, StoredVerdict.id.in_(before))
        )
        .order_by(StoredVerdict.at, StoredVerdict.id)
    ).all()
    hosts = session.execute(
        select(Host.id, Host.enrolled_at).where(Host.removed_at.is_(None))
    ).all()
    drawn = chart.fleet_chart(
        [(r[0], r[1], r[2]) for r in rows], [(h[0], h[1]) for h in hosts], now
    )
    request.app.state.web_chart = (key, time.monotonic(), drawn)
    return drawn


def _overview_regions(request: Request, who: User) -> dict[str, str]:
    ctx = ctx_of(request)
    query = OverviewQuery.of(request)
    with ctx.sessions() as session:
        rows = hostrows.host_rows(session)
        active = len(alarms.list_alarms(session, state="active"))
        drawn = _fleet_chart(request, session, ctx.clock.now())
    shown = hostrows.filter_and_sort(
        rows, status=query.status, text=query.text, sort=query.sort, descending=query.descending
    )
    common = _common(request, who)
    return {
        "summary": fragment(
            "_summary.html", counts=hostrows.summary(rows), total=len(rows), active=active, **common
        ),
        "hosts": fragment("_hosts_table.html", rows=shown, total=len(rows), q=query, **common),
        "chart": fragment("_fleet_chart.html", chart=drawn, **common),
    }


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=303)


@router.get("/ui/", response_class=HTMLResponse)
def overview(request: Request, who: LoggedIn) -> HTMLResponse:
    _viewer(who)
    return page(
        request,
        "overview.html",
        principal=who.principal,
        session=who.session,
        regions=_overview_regions(request, who),
        q=OverviewQuery.of(request),
        filters=hostrows.FILTERS,
        sorts=hostrows.SORTS,
        live="/ui/live/overview",
    )


@router.get("/ui/live/overview")
def overview_live(request: Request, who: LoggedIn) -> JSONResponse:
    _viewer(who)
    return JSONResponse({"regions": _overview_regions(request, who)})


# --- a host -------------------------------------------------------------------------------


def _host_regions(request: Request, who: User, name: str) -> tuple[dict[str, str], Any]:
    ctx: ServerContext = ctx_of(request)
    with ctx.sessions() as session:
        host = enrol.get_host(session, name)
        host_alarms = alarms.list_alarms(session, host=name, limit=20)
        active = sum(1 for a in host_alarms if a.state != alarms.CLEARED)
        row = hostrows.host_row(session, host, active)
        verdicts = list(
            session.scalars(
                select(StoredVerdict)
                .where(StoredVerdict.host_id == host.id)
                .order_by(StoredVerdict.id.desc())
                .limit(100)
            )
        )
        timeline = chart.host_timeline(
            [(v.at, v.status, str((v.messages or [""])[0])) for v in verdicts]
        )
        common = {**_common(request, who), "host": host, "row": row}
        regions = {
            "status": fragment("_host_status.html", **common),
            "history": fragment(
                "_host_history.html",
                verdicts=verdicts,
                timeline=timeline,
                change=evidence.verdict_change(verdicts),
                verdict_states=hostrows.VERDICTS,
                **common,
            ),
            "alarms": fragment(
                "_host_alarms.html", alarms=host_alarms, titles=alarms.TITLES, **common
            ),
        }
        # the evidence (a page of the decoded log) only when the browser's copy is not current
        asked = request.query_params.get("events")
        events_page = evidence.page_of(asked)
        evidence_version = evidence.version(session, host, events_page)
        if _known(request).get("evidence") != evidence_version:
            shown = evidence.host_evidence(ctx, session, host, events_page)
            regions["evidence"] = fragment(
                "_host_evidence.html", ev=shown, events_asked=asked is not None, **common
            )
        facts_of_host = {
            "ek_fingerprint": host.ek_fingerprint,
            "ek_certificate": host.ek_certificate is not None,
            "ek_trusted": host.ek_trusted,
            "new_ek_fingerprint": host.new_ek_fingerprint,
            "ak_name": host.ak_name,
            "enrolled_at": host.enrolled_at,
            "reconnect_allowed": host.reconnect_allowed,
            "secure_config": host.secure_config,
            "status": host.status,
            "policy": host.policy_name,
            "tpm": row.tpm,
            "tpm_change_requests": hostviews.tpm_change_requests(session, host),
            "versions": {"evidence": evidence_version},
        }
    return regions, facts_of_host


def _known(request: Request) -> dict[str, str]:
    """The versions of the regions the browser shows (``?known=evidence:abc1,...``); live
    updates only: a page always has every region."""
    found: dict[str, str] = {}
    if not request.url.path.startswith("/ui/live/"):
        return found
    for item in request.query_params.get("known", "")[:500].split(","):
        region, _, seen = item.partition(":")
        if region and seen:
            found[region] = seen
    return found


@router.get("/ui/hosts/{name}", response_class=HTMLResponse)
def host_page(request: Request, name: str, who: LoggedIn) -> HTMLResponse:
    _viewer(who)
    regions, host_facts = _host_regions(request, who, name)
    names = [p["name"] for p in policies.list_policies(ctx_of(request))]
    return page(
        request,
        "host.html",
        principal=who.principal,
        session=who.session,
        name=name,
        regions=regions,
        facts=host_facts,
        policy_names=names,
        notice=request.query_params.get("done", ""),
        live=f"/ui/live/hosts/{name}",
    )


@router.get("/ui/live/hosts/{name}")
def host_live(request: Request, name: str, who: LoggedIn) -> JSONResponse:
    _viewer(who)
    regions, host_facts = _host_regions(request, who, name)
    return JSONResponse({"regions": regions, "versions": host_facts["versions"]})


# --- alarms, policies, vTPMs ----------------------------------------------------------------


@router.get("/ui/alarms", response_class=HTMLResponse)
def alarms_page(request: Request, who: LoggedIn) -> HTMLResponse:
    _viewer(who)
    state = request.query_params.get("state", "active")
    state = state if state in ALARM_STATES else "active"
    with ctx_of(request).sessions() as session:
        found = alarms.list_alarms(session, state=None if state == "all" else state)
        return page(
            request,
            "alarms.html",
            principal=who.principal,
            session=who.session,
            alarms=found,
            state=state,
            states=ALARM_STATES,
            titles=alarms.TITLES,
            notice=request.query_params.get("done", ""),
        )


@router.get("/ui/policies", response_class=HTMLResponse)
def policies_page(request: Request, who: LoggedIn) -> HTMLResponse:
    _viewer(who)
    found = policies.list_policies(ctx_of(request))
    return page(
        request, "policies.html", principal=who.principal, session=who.session, policies=found
    )


@router.get("/ui/policies/{name}", response_class=HTMLResponse)
def policy_page(request: Request, name: str, who: LoggedIn) -> HTMLResponse:
    _viewer(who)
    ctx = ctx_of(request)
    found = policies.get_policy(ctx, name)
    with ctx.sessions() as session:
        changes = policies.history(session, name)
    return page(
        request,
        "policy.html",
        principal=who.principal,
        session=who.session,
        policy=found,
        meanings=evidence.PCR_MEANINGS,
        history=changes,
    )


@router.get("/ui/vtpms", response_class=HTMLResponse)
def vtpms_page(request: Request, who: LoggedIn) -> HTMLResponse:
    _viewer(who)
    return page(request, "vtpms.html", principal=who.principal, session=who.session)


# --- admin: recovery keys, audit log --------------------------------------------------------


@router.get("/ui/escrow", response_class=HTMLResponse)
def escrow_page(request: Request, who: LoggedIn) -> HTMLResponse:
    require_role(who.principal, "admin", ADMIN)
    with ctx_of(request).sessions() as session:
        hosts = list(
            session.scalars(select(Host).where(Host.removed_at.is_(None)).order_by(Host.name))
        )
        states = [(h.name, escrow.state_of(session, h)) for h in hosts]
        known = {h.name for h in hosts}
        removed = sorted(set(session.scalars(select(EscrowedKey.host_name))) - known)
        return page(
            request,
            "escrow.html",
            principal=who.principal,
            session=who.session,
            states=states,
            removed=removed,
            labels=hostrows.ESCROW,
        )


@router.get("/ui/audit", response_class=HTMLResponse)
def audit_page(request: Request, who: LoggedIn) -> HTMLResponse:
    require_role(who.principal, "admin", ADMIN)
    host = request.query_params.get("host", "").strip()
    action = request.query_params.get("action", "").strip()
    with ctx_of(request).sessions() as session:
        events = audit.events(session, host=host or None, action=action or None, limit=300)
        return page(
            request,
            "audit.html",
            principal=who.principal,
            session=who.session,
            events=events,
            host=host,
            action=action,
        )
