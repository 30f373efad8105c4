"""Issue 12, item 10: path and query parameters are validated before they reach the database.

Each case was a 500 (or a name the host-name rule refuses reaching a route): ids beyond the
database's integer range overflowed in the driver. Now they are 422 ``RequestInvalid`` (the API)
or refused the same way on the dashboard's form routes, and nothing is logged as a crash.
"""

from __future__ import annotations

import logging
import re

import anyio
import httpx
import pytest

from .conftest import Server

HUGE = str(2**80)
CASES = {
    "alarm id past the integer range (ack)": ("POST", f"/v1/alarms/{HUGE}/ack", {}, "alarm_id"),
    "alarm id past the integer range (reset)": ("POST", f"/v1/alarms/{HUGE}/reset", {}, "alarm_id"),
    "alarm id 2**31": ("POST", f"/v1/alarms/{2**31}/ack", {}, "alarm_id"),
    "alarm id zero": ("POST", "/v1/alarms/0/ack", {}, "alarm_id"),
    "negative alarm id": ("POST", "/v1/alarms/-1/reset", {}, "alarm_id"),
    "TPM request id past the range": (
        "POST", f"/v1/hosts/host1/tpm-requests/{HUGE}/accept", {"reason": "r"}, "request_id"
    ),
    "host name with a newline": ("GET", "/v1/hosts/host1%0A", None, "name"),
    "host name too long": ("GET", "/v1/hosts/" + "h" * 254, None, "name"),
    "policy name with a space": ("GET", "/v1/policies/a%20b", None, "name"),
    "escrow host name with a newline": ("GET", "/v1/escrow/a%0A?reason=x", None, "host"),
    "alarm host filter not a name": ("GET", "/v1/alarms?host=a%0A", None, "host"),
    "audit host filter not a name": ("GET", "/v1/audit?host=" + "h" * 300, None, "host"),
    "reason past its length": ("DELETE", "/v1/hosts/host1?reason=" + "r" * 1001, None, "reason"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_parameters_are_refused_with_422(
    server: Server, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    method, path, body, field = CASES[case]
    caplog.set_level(logging.ERROR, logger="hostseal.server")
    response = server.api.request(method, path, token=server.admin, json=body)
    assert response.status_code == 422, response.text
    shown = response.json()
    assert shown["error"] == "RequestInvalid"
    assert field in shown["message"]
    assert not caplog.records


async def _dashboard_post(server: Server, path: str, fields: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=server.api.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as client:
        page = await client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        logged = await client.post(
            "/ui/login", data={"token": server.operator, "csrf": csrf.group(1)}
        )
        assert logged.status_code == 303, logged.text
        page = await client.get("/ui/alarms")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        return await client.post(path, data={**fields, "csrf": csrf.group(1)})


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        (f"/ui/alarms/{HUGE}/ack", {"comment": "x"}),
        (f"/ui/alarms/{HUGE}/reset", {"comment": "x"}),
        ("/ui/alarms/1/ack", {"comment": "c" * 5000}),
        ("/ui/hosts/host1/approve", {"reason": "r" * 5000}),
        ("/ui/hosts/host1/policy", {"policy": "p" * 300, "reason": "r"}),
    ],
)
def test_dashboard_forms_past_their_bounds_are_refused_not_crashed(
    server: Server, path: str, fields: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="hostseal.server")
    response = anyio.run(_dashboard_post, server, path, fields)
    assert response.status_code == 422, response.text
    assert not caplog.records


@pytest.mark.parametrize(
    "name", ["host1", "a", "h" * 253, "h" * 254, "host1\n", "-x", "a b", "a/b", "x.y-z_1", ""]
)
def test_the_schema_name_rule_is_the_enrolment_rule(name: str) -> None:
    """One rule for host names: the API's parameters refuse what enrolment refuses."""
    from pydantic import TypeAdapter, ValidationError

    from hostseal.server.errors import Unprocessable
    from hostseal.server.hostnames import check_name
    from hostseal.server.http.api.schemas import HostName

    try:
        check_name(name)
        by_enrolment = True
    except Unprocessable:
        by_enrolment = False
    try:
        TypeAdapter(HostName).validate_python(name)
        by_schema = True
    except ValidationError:
        by_schema = False
    assert by_schema == by_enrolment
