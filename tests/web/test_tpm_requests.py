"""The host page shows a TPM change request beside the host (issue 12, item 2): another lab
host's real agent enrols under esx3's name; the page shows both EKs, the certificate status and
the address; an operator rejects it from the page (audited) and esx3 is unchanged."""

from __future__ import annotations

import re

import pytest

from hostseal import lab
from hostseal.agent import Agent, AgentConfig
from hostseal.client.http import ApiError

from .conftest import WebFleet, login, screenshot

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Browser = sync_api.Browser

pytestmark = pytest.mark.swtpm


def test_operator_sees_and_rejects_a_tpm_change_request(browser: Browser, fleet: WebFleet) -> None:
    before = fleet.api("viewer", "GET", "/v1/hosts/esx3")
    intruder = lab.start(fleet.lab_dir, "intruder")
    agent = Agent(
        AgentConfig(
            name="esx3",
            server=fleet.service.url,
            ca=fleet.service.ca,
            tcti=intruder.tcti,
            eventlog=intruder.eventlog,
            bootbank=fleet.root / "intruder" / "bootbank",
            state_dir=fleet.root / "intruder" / "agent",
            interval=1,
            escrow=False,
        )
    )
    with pytest.raises(ApiError) as err:
        agent.enrol()
    assert err.value.kind == "TpmChangeRequested"
    [request] = [
        r
        for r in fleet.api("viewer", "GET", "/v1/hosts/esx3")["tpm_change_requests"]
        if r["state"] == "open"
    ]

    viewer = login(browser, fleet, "viewer", "/ui/hosts/esx3")
    section = viewer.locator(
        "section", has=viewer.get_by_role("heading", name="TPM change requests")
    )
    expect(section).to_contain_text(request["new_ek_fingerprint"])
    expect(section).to_contain_text(before["ek"]["fingerprint"])
    expect(section).to_contain_text("127.0.0.1")
    expect(section).to_contain_text("None")  # the lab TPM sent no EK certificate
    expect(section.get_by_role("button", name="Reject")).to_have_count(0)
    viewer.context.close()

    page = login(browser, fleet, "operator", "/ui/hosts/esx3")
    page.get_by_label("Reason (kept in the audit log)").and_(
        page.locator(f"#tpm-reject-{request['id']}")
    ).fill("not our hardware, ticket 7")
    page.locator(f"#tpm-reject-{request['id']}").locator("xpath=..").get_by_role(
        "button", name="Reject"
    ).click()
    page.wait_for_url(re.compile(r"/ui/hosts/esx3\?done=tpm-rejected"))
    expect(page.locator(".notice")).to_contain_text("The TPM change was rejected")
    screenshot(page, "host-esx3-tpm-request-rejected")
    page.context.close()

    after = fleet.api("viewer", "GET", "/v1/hosts/esx3")
    assert after["status"] == before["status"] and after["ek"] == before["ek"]
    assert [r["state"] for r in after["tpm_change_requests"]] == ["rejected"]
    [event] = [e for e in fleet.audit() if e["action"] == "host.tpm-change-rejected"]
    assert event["who"] == "operator" and event["reason"] == "not our hardware, ticket 7"
    assert fleet.attest("esx3").status == "Passed"
    lab.stop(fleet.lab_dir, "intruder")
