"""The dashboard is usable with the keyboard and a screen reader, and readable: every action is
reached with Tab (with a visible focus), every form control has a label, landmarks are there,
text has a contrast of at least 4.5:1, and no status is told by colour alone."""

from __future__ import annotations

import re

import pytest

from . import _a11y
from .conftest import WebFleet, login, screenshot

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
Browser = sync_api.Browser
Page = sync_api.Page

pytestmark = pytest.mark.swtpm

# (role, path): the operator sees every action on hosts and alarms; the admin the keys.
PAGES = [
    ("operator", "/ui/"),
    ("operator", "/ui/hosts/esx2"),
    ("operator", "/ui/alarms?state=all"),
    ("admin", "/ui/escrow"),
    ("admin", "/ui/audit"),
    ("admin", "/ui/policies"),
    ("admin", "/ui/policies/golden"),
    ("admin", "/ui/vtpms"),
]


def _pages(browser: Browser, fleet: WebFleet) -> dict[str, Page]:
    fleet.fail("esx2")  # so that the host and alarm pages have alarms to act on
    return {role: login(browser, fleet, role) for role in ("operator", "admin")}


def test_keyboard_reaches_every_action(browser: Browser, fleet: WebFleet) -> None:
    pages = _pages(browser, fleet)
    for role, path in PAGES[:4]:
        page = pages[role]
        page.goto(f"{fleet.service.url}{path}")
        page.evaluate("document.activeElement && document.activeElement.blur()")
        expected = set(page.evaluate(_a11y.FOCUSABLE))
        assert len(expected) > 5, path
        reached: set[str] = set()
        unmarked: set[str] = set()
        for number in range(len(expected) * 3 + 10):
            page.keyboard.press("Tab")
            active = page.evaluate(_a11y.ACTIVE)
            if active is None:
                continue
            name, outlined = active
            if number == 0:
                assert name == "A|#main||Skip to content", f"{path}: first stop is {name}"
            reached.add(name)
            if not outlined:
                unmarked.add(name)
            if expected <= reached:
                break
        assert expected - reached == set(), f"{path}: not reached with Tab"
        assert unmarked == set(), f"{path}: focused without a visible outline"
    for page in pages.values():
        page.context.close()


def test_every_control_has_a_label_and_pages_have_landmarks(
    browser: Browser, fleet: WebFleet
) -> None:
    pages = _pages(browser, fleet)
    anonymous = browser.new_page(ignore_https_errors=True)
    anonymous.goto(f"{fleet.service.url}/ui/login")
    for role, path in PAGES:
        page = pages[role]
        page.goto(f"{fleet.service.url}{path}")
        screenshot(page, "page-" + (re.sub(r"[^a-z0-9]+", "-", path).strip("-") or "overview"))
        assert page.evaluate(_a11y.UNLABELLED) == [], path
        expect(page.get_by_role("main")).to_have_count(1)
        expect(page.get_by_role("banner")).to_have_count(1)
        expect(page.get_by_role("navigation", name="Main")).to_have_count(1)
        expect(page.get_by_role("heading", level=1)).to_have_count(1)
        # The accessibility tree names every text box, list box and button.
        tree = page.locator("body").aria_snapshot()
        for line in tree.splitlines():
            if re.match(r"\s*- (textbox|combobox|searchbox|button)\b", line):
                assert '"' in line, f"{path}: unnamed control in the accessibility tree: {line}"
    assert anonymous.evaluate(_a11y.UNLABELLED) == []
    expect(anonymous.get_by_label("API token")).to_be_visible()
    anonymous.close()
    for page in pages.values():
        page.context.close()


def test_contrast_and_statuses_in_words(browser: Browser, fleet: WebFleet) -> None:
    pages = _pages(browser, fleet)
    for role, path in PAGES:
        page = pages[role]
        page.goto(f"{fleet.service.url}{path}")
        page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        assert page.evaluate(_a11y.LOW_CONTRAST) == [], path
        assert page.evaluate(_a11y.WORDLESS_STATUS) == [], path
    # The charts have a text alternative: a description and the data as a table.
    overview = pages["operator"]
    overview.goto(f"{fleet.service.url}/ui/")
    chart = overview.get_by_role("img", name="Fleet attestation states over time")
    expect(chart).to_have_attribute("aria-labelledby", "fleet-chart-title fleet-chart-desc")
    expect(overview.locator("#fleet-chart-desc")).to_contain_text("Now:")
    expect(overview.locator("#fleet-chart-data table tbody tr").first).to_be_attached()
    for page in pages.values():
        page.context.close()
