"""The host page's evidence without a browser: the decoded log a page at a time, the list of
events that differ bounded, the page asked for read safely."""

from __future__ import annotations

import pytest

from hostseal.lab.firmware import BootConfig, measure_boot
from hostseal.measure import parse_event_log
from hostseal.server.http.web import evidence
from hostseal.server.http.web.evidence import EVENTS_PER_PAGE, FLAGGED_SHOWN, HostEvidence, Note


def _empty() -> HostEvidence:
    return HostEvidence("sha256", None, None, [], [], None, [], [])


def test_a_long_log_gives_one_page_and_a_bounded_list_of_differences() -> None:
    raw, _ = measure_boot(BootConfig(grub_modules=400), ("sha256",))
    log = parse_event_log(raw)
    pcr9 = [e.index for e in log.events if e.pcr == 9]
    notes = {i: [Note("failure", "module not allowed")] for i in pcr9}
    for page, first in ((1, 0), (3, 2 * EVENTS_PER_PAGE), (10**6, None)):
        shown = _empty()
        evidence._paginate(shown, log, "sha256", notes, page)
        assert shown.event_count == len(log.events)
        assert shown.pages == -(-len(log.events) // EVENTS_PER_PAGE)
        assert 0 < len(shown.events) <= EVENTS_PER_PAGE
        if first is not None:
            assert shown.events[0].index == first
        else:  # past the end: the last page
            assert shown.page == shown.pages
            assert shown.events[-1].index == log.events[-1].index
        assert shown.flagged_total == len(pcr9) > FLAGGED_SHOWN
        assert len(shown.flagged) == FLAGGED_SHOWN
        assert all(row.severity == "failure" for row in shown.flagged)


@pytest.mark.parametrize(
    ("asked", "page"),
    [(None, 1), ("", 1), ("2", 2), ("0", 1), ("-3", 1), ("x", 1), ("٣", 1), ("9" * 40, 1)],
)
def test_the_page_asked_for_is_read_safely(asked: str | None, page: int) -> None:
    assert evidence.page_of(asked) == page
