"""A policy's page shows its audited history: when, who, why, what was loosened or tightened,
and the old and new digests; the dashboard's assignment form asks for the reason too."""

from __future__ import annotations

import pytest

from .conftest import WebFleet, login, screenshot

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Browser = sync_api.Browser

pytestmark = pytest.mark.swtpm

STRICT = {
    "format": "hostseal-reference-policy",
    "version": 1,
    "require_secure_boot": True,
    "pcrs": {"sha256": {"7": "65" * 32}},
    "quote_pcrs": [0, 7, 8],
}


def _digest(fleet: WebFleet, name: str) -> str:
    return str(fleet.api("viewer", "GET", f"/v1/policies/{name}")["digest"])


def test_policy_page_shows_who_loosened_what_and_why(browser: Browser, fleet: WebFleet) -> None:
    put = "/v1/policies/web-strict"
    fleet.api("operator", "PUT", put, json=STRICT, params={"reason": "baseline for rack 9"})
    first = _digest(fleet, "web-strict")
    weaker = {**STRICT, "require_secure_boot": False, "kernel_cmdline_required": ["ro"]}
    fleet.api("operator", "PUT", put, json=weaker, params={"reason": "esx9 debugging, INC-7"})
    second = _digest(fleet, "web-strict")

    # the dashboard's assignment form: a reason is asked for and kept
    page = login(browser, fleet, "operator", "/ui/hosts/esx3")
    page.get_by_label("Policy for this host").select_option("golden")
    page.locator("#policy-reason").fill("re-assigned from the dashboard")
    page.get_by_role("button", name="Assign").click()
    page.wait_for_url("**/ui/hosts/esx3?done=policy")
    page.context.close()

    page = login(browser, fleet, "viewer", "/ui/policies/web-strict")
    rows = page.locator("table.policy-history tbody tr")
    expect(rows).to_have_count(2)
    newest = rows.nth(0)
    expect(newest).to_contain_text("operator (operator)")
    expect(newest).to_contain_text("Edited")
    expect(newest).to_contain_text("esx9 debugging, INC-7")
    expect(newest.locator("li.change-loosened")).to_have_text(
        "loosened require_secure_boot: true → false"
    )
    expect(newest.locator("li.change-tightened")).to_contain_text("'ro' now required")
    expect(newest.locator(f'code[title="{first}"]')).to_have_text(f"{first[:12]}…")
    expect(newest.locator(f'code[title="{second}"]')).to_have_text(f"{second[:12]}…")
    expect(rows.nth(1)).to_contain_text("baseline for rack 9")
    expect(rows.nth(1)).to_contain_text("created: PCR 7 pinned (sha256)")
    screenshot(page, "policy-history")

    page.goto(f"{fleet.service.url}/ui/policies/golden")
    latest = page.locator("table.policy-history tbody tr").nth(0)
    expect(latest).to_contain_text("Assigned esx3")
    expect(latest).to_contain_text("re-assigned from the dashboard")
    expect(latest.locator(f'code[title="{_digest(fleet, "golden")}"]')).to_have_count(2)
    page.context.close()
