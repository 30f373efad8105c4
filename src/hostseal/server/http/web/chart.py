"""Charts drawn on the server as inline SVG (no chart library): the geometry is computed here,
the markup is in ``templates/_charts.html``.

* :func:`fleet_chart` -- the fleet's attestation states over time: the verdict history cut
  into equal time slices; for each slice, how many hosts stood Passed, Warning, Failed or not
  attested yet (each host counts with its latest verdict at the end of the slice), as stacked
  bars. Failed bars are hatched and Warning bars dotted, so the chart reads without colour; a
  table of the same data follows it.
* :func:`host_timeline` -- a host's last verdicts, oldest first, one marked square each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

STATES = ("Passed", "Warning", "Failed", "Not attested")  # bottom to top
SYMBOLS = {"Passed": "✓", "Warning": "!", "Failed": "✗", "Not attested": "…"}
WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Segment:
    state: str
    y: float
    height: float
    count: int


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    segments: list[Segment]
    title: str


@dataclass(frozen=True)
class Span:
    """Consecutive slices with the same counts: one row of the chart's data table."""

    start: datetime
    end: datetime
    counts: dict[str, int]


@dataclass
class FleetChart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar] = field(default_factory=list)
    y_ticks: list[tuple[float, int]] = field(default_factory=list)
    x_labels: list[tuple[float, str, str]] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    description: str = ""
    states: tuple[str, ...] = STATES

    @property
    def empty(self) -> bool:
        return not self.bars


def _counts_text(counts: dict[str, int]) -> str:
    parts = [f"{counts[s]} {s}" for s in STATES if counts.get(s)]
    return ", ".join(parts) if parts else "no hosts"


def _time_label(at: datetime, span: timedelta) -> str:
    if span <= timedelta(minutes=10):
        return at.strftime("%H:%M:%S")
    if span <= timedelta(days=1):
        return at.strftime("%H:%M")
    return at.strftime("%m-%d %H:%M")


def fleet_chart(
    verdicts: Sequence[tuple[int, datetime, str]],
    hosts: Sequence[tuple[int, datetime]],
    now: datetime,
    *,
    slices: int = 30,
) -> FleetChart:
    """``verdicts``: (host id, time, status) oldest first; ``hosts``: (id, enrolled at)."""
    chart = FleetChart(width=720, height=200, left=40, top=10, plot_width=668, plot_height=160)
    recent = [v for v in verdicts if v[1] >= now - WINDOW]
    if not recent or not hosts:
        return chart
    first_enrolment = min(since for _, since in hosts)
    start = max(min(recent[0][1], now - timedelta(minutes=1)), first_enrolment)
    start = min(start, now - timedelta(seconds=slices))
    step = (now - start) / slices
    enrolled = dict(hosts)
    latest: dict[int, str] = {}
    pending = iter(verdicts)  # verdicts before the window give the starting states
    upcoming = next(pending, None)
    columns: list[tuple[datetime, dict[str, int]]] = []
    for number in range(1, slices + 1):
        end = start + step * number
        while upcoming is not None and upcoming[1] <= end:
            latest[upcoming[0]] = upcoming[2]
            upcoming = next(pending, None)
        counts = dict.fromkeys(STATES, 0)
        for host_id, since in enrolled.items():
            if since <= end:
                state = latest.get(host_id, "Not attested")
                counts[state if state in counts else "Not attested"] += 1
        columns.append((end, counts))
    top = max(max(sum(c.values()) for _, c in columns), 1)
    unit = chart.plot_height / top
    slot = chart.plot_width / slices
    base = chart.top + chart.plot_height
    for number, (end, counts) in enumerate(columns):
        y = float(base)
        segments = []
        for state in STATES:
            if counts[state]:
                height = counts[state] * unit
                y -= height
                segments.append(Segment(state, round(y, 2), round(height, 2), counts[state]))
        label = f"{_time_label(end, now - start)}: {_counts_text(counts)}"
        x = chart.left + number * slot + 1
        chart.bars.append(Bar(round(x, 2), round(slot - 2, 2), segments, label))
    ticks = sorted({0, top, top // 2} if top >= 4 else set(range(top + 1)))
    chart.y_ticks.extend((round(base - t * unit, 2), t) for t in ticks)
    span = now - start
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = chart.left + fraction * chart.plot_width
        chart.x_labels.append((round(x, 2), _time_label(start + span * fraction, span), anchor))
    previous_start = start
    for index, (end, counts) in enumerate(columns):
        if chart.spans and chart.spans[-1].counts == counts:
            chart.spans[-1] = Span(chart.spans[-1].start, end, counts)
        else:
            chart.spans.append(Span(previous_start, end, counts))
        previous_start = columns[index][0]
    changes = len(chart.spans) - 1
    chart_now = columns[-1][1]
    chart.description = (
        f"Attestation states of {sum(chart_now.values())} hosts from "
        f"{_time_label(start, span)} to {_time_label(now, span)} UTC. Now: "
        f"{_counts_text(chart_now)}. "
        + (f"The counts changed {changes} time(s)." if changes else "No change in this period.")
    )
    return chart


@dataclass(frozen=True)
class Marker:
    x: int
    state: str
    symbol: str
    title: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    markers: list[Marker]
    description: str


def host_timeline(verdicts: Sequence[tuple[datetime, str, str]], *, last: int = 40) -> Timeline:
    """``verdicts``: (time, status, first message) newest first."""
    shown = list(reversed(verdicts[:last]))
    markers = []
    for number, (at, status, message) in enumerate(shown):
        state = status if status in SYMBOLS else "Not attested"
        title = f"{at.strftime('%Y-%m-%d %H:%M:%S')} UTC: {status}" + (
            f" — {message}" if message else ""
        )
        markers.append(Marker(4 + number * 28, state, SYMBOLS[state], title))
    counts: dict[str, int] = {}
    for _, status, _ in shown:
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    latest = f" Latest: {shown[-1][1]}." if shown else ""
    return Timeline(
        width=max(8 + len(shown) * 28, 40),
        height=32,
        markers=markers,
        description=f"The last {len(shown)} verdicts, oldest first: {summary}.{latest}",
    )
