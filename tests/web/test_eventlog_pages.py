"""A long event log on the host page: a page of events at a time with next and previous, and the
live refresh does not send the log again while it has not changed."""

from __future__ import annotations

import json
import re

import pytest

from hostseal import lab
from hostseal.server.http.web.evidence import EVENTS_PER_PAGE

from .conftest import WebFleet, login, screenshot

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Browser = sync_api.Browser

pytestmark = pytest.mark.swtpm
MODULES = 600  # GRUB modules measured into PCR 9: 626 events in all
TOTAL = MODULES + 26
DASH = "\u2013"  # the pager's range: "Events 1\u2013100 of 626"


def _reboot(fleet: WebFleet, name: str, modules: int) -> None:
    host = lab.load(fleet.lab_dir, name)
    lab.reboot(fleet.lab_dir, name, host.boot.with_changes(grub_modules=modules, secure_boot=True))
    outcome = fleet.attest(name)
    assert outcome.status == "Passed", outcome.messages


def test_a_long_event_log_is_shown_a_page_at_a_time(browser: Browser, fleet: WebFleet) -> None:
    assert 20 <= EVENTS_PER_PAGE <= 200
    fleet.all_passing()
    _reboot(fleet, "esx3", MODULES)
    try:
        page = login(browser, fleet, "viewer", "/ui/hosts/esx3")
        log = page.locator("#eventlog-all")
        log.locator("summary").click()
        rows = log.locator("table.events tbody tr")
        expect(rows).to_have_count(EVENTS_PER_PAGE)
        expect(log.locator(".pager")).to_contain_text(f"Events 1{DASH}{EVENTS_PER_PAGE} of {TOTAL}")
        expect(rows.first.locator("td").first).to_have_text("0")  # the header (Spec ID) event
        expect(log.get_by_role("link", name="Previous")).to_have_count(0)
        screenshot(page, "host-esx3-eventlog-page1")

        log.get_by_role("link", name="Next").click()
        page.wait_for_url(re.compile(r"events=2"))
        log = page.locator("#eventlog-all")
        expect(log).to_have_attribute("open", "")
        rows = log.locator("table.events tbody tr")
        expect(rows).to_have_count(EVENTS_PER_PAGE)
        second = f"Events {EVENTS_PER_PAGE + 1}{DASH}{2 * EVENTS_PER_PAGE} of {TOTAL}"
        expect(log.locator(".pager")).to_contain_text(second)
        expect(rows.first.locator("td").first).to_have_text(str(EVENTS_PER_PAGE))

        # the live refresh: the summary regions come every 3 s, the log only when it changed
        with page.expect_response(lambda r: "/ui/live/hosts/esx3" in r.url) as polled:
            pass
        live = polled.value
        assert "events=2" in live.url
        answer = json.loads(live.body())
        assert "evidence" not in answer["regions"], "the unchanged log was sent again"
        assert "status" in answer["regions"]
        assert len(live.body()) < 40_000
        assert fleet.attest("esx3").status == "Passed"  # a new verdict, the same boot
        with page.expect_response(lambda r: "/ui/live/hosts/esx3" in r.url) as polled:
            pass
        assert "evidence" not in json.loads(polled.value.body())["regions"]
        expect(log.locator(".pager")).to_contain_text(second)  # still the page it was on

        log.get_by_role("link", name="Previous").click()
        page.wait_for_url(re.compile(r"events=1"))
        expect(page.locator("#eventlog-all .pager")).to_contain_text(
            f"Events 1{DASH}{EVENTS_PER_PAGE} of {TOTAL}"
        )

        last = -(-TOTAL // EVENTS_PER_PAGE)
        for asked in (last, 999):  # past the end: the last page
            page.goto(f"{fleet.service.url}/ui/hosts/esx3?events={asked}")
            log = page.locator("#eventlog-all")
            start = (last - 1) * EVENTS_PER_PAGE + 1
            expect(log.locator(".pager")).to_contain_text(f"Events {start}{DASH}{TOTAL} of {TOTAL}")
            expect(log.locator("table.events tbody tr")).to_have_count(TOTAL - start + 1)
            expect(log.get_by_role("link", name="Next")).to_have_count(0)
        html = page.content()
        assert len(html) < 400_000, len(html)  # not 626 rows: one page of them
        # a page always has the whole evidence region, whatever version the address names
        region = page.locator("[data-live-region=evidence]")
        seen = region.get_attribute("data-live-version")
        page.goto(f"{fleet.service.url}/ui/hosts/esx3?events={last}&known=evidence:{seen}")
        expect(page.locator("#eventlog-all .pager")).to_contain_text(f"of {TOTAL}")
        page.context.close()
    finally:
        _reboot(fleet, "esx3", 0)
