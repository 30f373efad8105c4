"""The dashboard in a browser, against a real server with lab hosts and real agents: log in, see
the fleet pass, watch a host fail live when Secure Boot is turned off, acknowledge its alarm,
reveal an escrowed key as admin (and find it in the audit log), be refused as viewer, CSRF."""

from __future__ import annotations

import re

import pytest

from hostseal.secureconfig import manager

from .conftest import HOSTS, WebFleet, login, screenshot

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Browser = sync_api.Browser

pytestmark = pytest.mark.swtpm
LIVE_WAIT = 15_000  # ms: the pages poll every 3 s


def test_login_shows_every_host_passed(browser: Browser, fleet: WebFleet) -> None:
    fleet.all_passing()
    page = login(browser, fleet, "viewer")
    rows = page.locator("tr[data-host]")
    expect(rows).to_have_count(3)
    for name in HOSTS:
        row = page.locator(f'tr[data-host="{name}"]')
        expect(row.locator("td.status")).to_have_text(re.compile(r"Passed"))
        expect(row).to_contain_text("TPM")  # configuration mode
        expect(row).to_contain_text("Escrowed")  # recovery key escrow
        expect(row).to_contain_text("On")  # Secure Boot, from the event log
    expect(page.locator("[data-live-region=summary]")).to_contain_text("3 hosts")
    expect(page.get_by_role("img", name="Fleet attestation states over time")).to_be_visible()
    expect(page.get_by_role("link", name="Recovery keys")).to_have_count(0)  # viewer
    screenshot(page, "overview-passed")
    page.context.close()


def test_a_host_turns_failed_without_reloading(browser: Browser, fleet: WebFleet) -> None:
    fleet.all_passing()
    page = login(browser, fleet, "operator")
    host_page = page.context.new_page()
    host_page.goto(f"{fleet.service.url}/ui/hosts/esx2")
    expect(host_page.locator(".host-status")).to_contain_text("Passed")
    for p in (page, host_page):
        p.evaluate("window.__marker = 'not reloaded'")

    fleet.fail("esx2")

    row = page.locator('tr[data-host="esx2"]')
    expect(row.locator("td.status")).to_have_text(re.compile("Failed"), timeout=LIVE_WAIT)
    expect(row.locator("td.message")).to_have_text("Host secure boot was disabled")
    expect(row).to_contain_text("Off")
    expect(page.locator("#live-changes")).to_contain_text(
        "esx2 is now Failed: Host secure boot was disabled"
    )
    expect(page.locator("[data-live-region=summary]")).to_contain_text("1 active alarm")
    assert page.evaluate("window.__marker") == "not reloaded"
    for other in ("esx1", "esx3"):
        expect(page.locator(f'tr[data-host="{other}"] td.status')).to_have_text(
            re.compile("Passed")
        )
    screenshot(page, "overview-esx2-failed")

    status = host_page.locator(".host-status")
    expect(status).to_contain_text("Failed", timeout=LIVE_WAIT)
    expect(status).to_contain_text("Host secure boot was disabled")
    expect(host_page.locator("[data-live-region=alarms]")).to_contain_text(
        "Host TPM attestation alarm"
    )
    assert host_page.evaluate("window.__marker") == "not reloaded"
    page.context.close()


def test_host_page_shows_what_differs_from_the_policy(browser: Browser, fleet: WebFleet) -> None:
    fleet.fail("esx2")
    page = login(browser, fleet, "viewer", "/ui/hosts/esx2")
    evidence = page.locator("[data-live-region=evidence]")
    pcr7 = evidence.locator("table.pcrs tr", has=page.locator("th", has_text=re.compile("^7$")))
    expect(pcr7).to_contain_text("Differs")
    expect(pcr7).to_contain_text("Secure Boot policy")
    flagged = evidence.locator("table.events").first.locator("tr.diff-bad")
    expect(flagged).to_have_count(1)
    expect(flagged).to_contain_text("SecureBoot = disabled")
    expect(flagged).to_contain_text("Host secure boot was disabled")
    diff = page.locator(".difflist")
    expect(diff.locator(".added").first).to_contain_text("Host secure boot was disabled")
    timeline = page.get_by_role("img", name="Verdict history")
    expect(timeline).to_be_visible()
    screenshot(page, "host-esx2-failed")
    page.context.close()


def test_operator_acknowledges_the_alarm(browser: Browser, fleet: WebFleet) -> None:
    fleet.all_passing()
    fleet.fail("esx2")  # a new alarm, raised
    alarm = fleet.alarm("esx2")
    assert alarm["state"] == "raised"
    page = login(browser, fleet, "operator", "/ui/hosts/esx2")
    page.get_by_label("Comment for acknowledging").fill("looking into it, ticket 99")
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(re.compile(r"/ui/hosts/esx2\?done=acknowledged"))
    expect(page.locator(".notice")).to_have_text("The alarm was acknowledged.")
    card = page.locator(f'[data-alarm="{alarm["id"]}"]')
    expect(card).to_contain_text("Acknowledged")
    acknowledged = fleet.alarm("esx2")
    assert acknowledged["state"] == "acknowledged"
    event = next(e for e in acknowledged["history"] if e["event"] == "acknowledged")
    assert (event["who"], event["comment"]) == ("operator", "looking into it, ticket 99")
    screenshot(page, "host-esx2-acknowledged")

    # A reset by hand is refused while Secure Boot is still off, with the reason.
    page.get_by_label("Comment for the reset").fill("fixed?")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Reset to green").click()
    assert navigation.value is not None and navigation.value.status == 409
    expect(page.get_by_role("alert")).to_contain_text("cannot be reset by hand")
    assert fleet.alarm("esx2")["state"] == "acknowledged"

    # The alarms page lists it among the active ones.
    page.goto(f"{fleet.service.url}/ui/alarms")
    expect(page.locator(f'[data-alarm="{alarm["id"]}"]')).to_contain_text("esx2")
    page.context.close()


def test_admin_reveals_a_key_and_finds_the_read_in_the_audit_log(
    browser: Browser, fleet: WebFleet
) -> None:
    page = login(browser, fleet, "admin", "/ui/escrow")
    reason = "system board replaced on esx1, ticket 4711"
    page.get_by_label("Reason for revealing esx1's keys").fill(reason)
    page.locator("#reveal-esx1").click()
    expect(page.get_by_role("heading", name="Recovery keys of esx1")).to_be_visible()
    [key] = manager.recovery_list(fleet.secure_config("esx1"), "test")
    expect(page.locator("[data-recovery-key]")).to_have_text(key.formatted_key)
    screenshot(page, "escrow-revealed")

    page.get_by_role("link", name="Audit log").click()
    entry = page.locator('tr[data-action="escrow.read"]').first
    expect(entry).to_contain_text("esx1")
    expect(entry).to_contain_text(reason)
    expect(entry).to_contain_text("admin")
    screenshot(page, "audit-log")
    page.context.close()

    # The same entry as a read through the REST API (same function, same audit record).
    via_api = "the same read through the API"
    fleet.api("admin", "GET", "/v1/escrow/esx1", params={"reason": via_api})
    reads = [e for e in fleet.audit() if e["action"] == "escrow.read"]
    by_web = next(e for e in reads if e["reason"] == reason)
    by_api = next(e for e in reads if e["reason"] == via_api)
    for entry_ in (by_web, by_api):
        assert (entry_["who"], entry_["role"], entry_["host"]) == ("admin", "admin", "esx1")
    assert by_web["details"] == by_api["details"] == {"recovery_ids": [key.formatted_id]}


def test_viewer_is_refused_recovery_keys_and_the_audit_log(
    browser: Browser, fleet: WebFleet
) -> None:
    reads_before = sum(1 for e in fleet.audit() if e["action"] == "escrow.read")
    page = login(browser, fleet, "viewer")
    answer = page.goto(f"{fleet.service.url}/ui/escrow")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text(
        "Only the admin role may read escrowed recovery keys"
    )
    expect(page.get_by_role("alert")).to_contain_text("has the viewer role")
    screenshot(page, "escrow-refused-viewer")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    posted = page.request.post(
        f"{fleet.service.url}/ui/escrow/esx1/reveal", form={"csrf": csrf, "reason": "curious"}
    )
    assert posted.status == 403
    assert "data-recovery-key" not in posted.text()
    answer = page.goto(f"{fleet.service.url}/ui/audit")
    assert answer is not None and answer.status == 403
    assert sum(1 for e in fleet.audit() if e["action"] == "escrow.read") == reads_before
    page.context.close()


def test_a_post_without_the_csrf_token_is_refused(browser: Browser, fleet: WebFleet) -> None:
    fleet.fail("esx2")
    alarm_id = fleet.alarm("esx2")["id"]
    page = login(browser, fleet, "operator", "/ui/alarms")
    url = f"{fleet.service.url}/ui/alarms/{alarm_id}/ack"
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    for form, headers in (
        ({"comment": "forged: no token"}, {}),
        ({"comment": "forged: wrong token", "csrf": "x" * 43}, {}),
        ({"comment": "forged: other site", "csrf": csrf}, {"Origin": "https://evil.example"}),
    ):
        refused = page.request.post(url, form=form, headers=headers)
        assert refused.status == 403, form
        assert "CSRF" in refused.text()
    history = fleet.alarm("esx2")["history"]
    assert not any("forged" in e["comment"] for e in history)
    # With the session's token the same request is accepted.
    accepted = page.request.post(url, form={"comment": "with the token", "csrf": csrf})
    assert accepted.ok
    assert any(e["comment"] == "with the token" for e in fleet.alarm("esx2")["history"])
    # The login form is protected too.
    refused = page.request.post(
        f"{fleet.service.url}/ui/login", form={"token": fleet.token("admin")}
    )
    assert refused.status == 403
    page.context.close()


def test_bad_token_is_refused_and_logout_ends_the_session(
    browser: Browser, fleet: WebFleet
) -> None:
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{fleet.service.url}/ui/")
    assert page.url.startswith(f"{fleet.service.url}/ui/login")
    page.get_by_label("API token").fill("hst_not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not known to this server")
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert fleet.token("viewer") not in cookie["value"]
    context.close()

    page = login(browser, fleet, "viewer")
    [logged_in] = page.context.cookies()
    page.get_by_role("button", name="Log out").click()
    expect(page.locator(".notice")).to_have_text("You are logged out.")
    page.goto(f"{fleet.service.url}/ui/")
    assert page.url.startswith(f"{fleet.service.url}/ui/login")
    page.context.close()
    # The old cookie, replayed, no longer opens a session.
    context = browser.new_context(ignore_https_errors=True)
    context.add_cookies([logged_in])
    page = context.new_page()
    page.goto(f"{fleet.service.url}/ui/")
    assert page.url.startswith(f"{fleet.service.url}/ui/login")
    context.close()
