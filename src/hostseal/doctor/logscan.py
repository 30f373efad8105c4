"""Scan ESXi, vCenter and hostseal logs for known problems: each finding once, with evidence.

Every line is matched against the log signatures of the knowledge base. A line's *kind*
(vmkernel, hostd, vpxd, ...) comes from markers in the line itself (``hostd[``, ``vpxd[``,
``cpu24:2097931)``), else from the file name (``vmkernel.log``, ``vpxd-11.log``), else it is
unknown and every signature may match it (pasted text, PSOD screens, standard input). A
signature marked ``evidence_only`` never raises a finding by itself: its lines are shown only
when another line raised it. A finding that *supersedes* another also present (the SHA-256
bank explains "connection cannot be established") absorbs its evidence, so each problem is
reported once, by its most specific explanation.

Pure: text in, findings out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath

from hostseal.doctor.knowledge import SEVERITIES, Finding, KnowledgeBase, LogSignature

MAX_EVIDENCE = 6
"""Evidence lines shown per finding (the count of all matching lines is kept too)."""
MAX_LINE = 4096
"""Characters of a line that are matched; longer lines are cut (a log line is far shorter)."""
_SHOWN = 300

_FILE_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), kind)
    for p, kind in (
        (r"^vmkernel", "vmkernel"),
        (r"^vmkwarning", "vmkwarning"),
        (r"^hostd", "hostd"),
        (r"^vpxd", "vpxd"),
        (r"psod|purple", "psod"),
        (r"^hostseal", "hostseal"),
    )
)
_LINE_KINDS: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"\bvpxd\[\w+\]"), frozenset({"vpxd"})),
    (re.compile(r"\bhostd\[\w+\]"), frozenset({"hostd"})),
    (re.compile(r"\bcpu\d+:\d+\)WARNING:"), frozenset({"vmkwarning", "vmkernel"})),
    (re.compile(r"\bcpu\d+:\d+\)|\bvmkernel: "), frozenset({"vmkernel"})),
    (re.compile(r"\bhostseal(\[\d+\]|\.agent\b|-\w+\.service\b)"), frozenset({"hostseal"})),
)


@dataclass(frozen=True)
class LogInput:
    """One log to scan: a name (file name, ``-`` for standard input) and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class Evidence:
    """A line that shows a finding: where it is (source and 1-based line number) and its text."""

    source: str
    line: int
    text: str

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "line": self.line, "text": self.text}


@dataclass
class LogFinding:
    """A finding seen in the logs, once, with a few evidence lines and how many lines matched."""

    finding: Finding
    evidence: list[Evidence] = field(default_factory=list)
    matches: int = 0
    absorbed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.finding.to_dict(),
            "matches": self.matches,
            "evidence": [e.to_dict() for e in self.evidence],
            "explains": self.absorbed,
        }


def file_kind(name: str) -> str | None:
    """The log kind a file's name says (``vmkernel.log``, ``vpxd-11.log``...), if any."""
    base = PurePath(name).name
    for pattern, kind in _FILE_KINDS:
        if pattern.search(base):
            return kind
    return None


def line_kinds(line: str, default: str | None) -> frozenset[str] | None:
    """The kinds a line belongs to: from its own markers, else the file's; ``None``: unknown."""
    for pattern, kinds in _LINE_KINDS:
        if pattern.search(line):
            return kinds
    return frozenset({default}) if default is not None else None


def _lines(text: str) -> Iterable[tuple[int, str]]:
    # splitlines() also ends lines at \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029; logs end
    # lines with \n (or \r\n), so split on \n only and strip the \r of CRLF files.
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        yield number, line.rstrip("\r\n")[:MAX_LINE]


_KEPT = 64
"""Matching lines remembered per finding, to pick evidence and to place superseded lines."""


@dataclass
class _Hit:
    position: tuple[int, int]  # (input index, line number)
    evidence: Evidence
    trigger: bool


@dataclass
class _Hits:
    """Every line one finding's signatures matched (the first few kept), and the count."""

    matches: int = 0
    lines: list[_Hit] = field(default_factory=list)

    @property
    def triggered(self) -> bool:
        return any(h.trigger for h in self.lines)

    @property
    def first(self) -> tuple[int, int]:
        return min(h.position for h in self.lines if h.trigger)

    def add(self, hit: _Hit) -> None:
        self.matches += 1
        if len(self.lines) < _KEPT:
            self.lines.append(hit)


def _distance(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (0, abs(a[1] - b[1])) if a[0] == b[0] else (1, abs(a[0] - b[0]))


def _evidence(lines: list[_Hit]) -> list[Evidence]:
    """Up to MAX_EVIDENCE lines, the lines that raised the finding first, in log order."""
    chosen = [h for h in lines if h.trigger][:MAX_EVIDENCE]
    chosen += [h for h in lines if not h.trigger][: MAX_EVIDENCE - len(chosen)]
    seen: set[tuple[int, int]] = set()
    unique = []
    for h in sorted(chosen, key=lambda h: h.position):
        if h.position not in seen:
            seen.add(h.position)
            unique.append(h.evidence)
    return unique


def scan(inputs: Sequence[LogInput], kb: KnowledgeBase) -> list[LogFinding]:
    """The findings shown by ``inputs``, each once, most serious first (then in log order)."""
    signatures: list[tuple[str, LogSignature]] = [
        (entry.id, sig) for entry in kb.entries.values() for sig in entry.logs
    ]
    if not signatures:
        return []
    # A line that matches no signature (almost every line of a real log) costs one search.
    anything = re.compile(
        "|".join(f"(?:{sig.pattern.pattern})" for _, sig in signatures), re.IGNORECASE
    )
    hits: dict[str, _Hits] = {}
    for index, item in enumerate(inputs):
        default = file_kind(item.name)
        for number, line in _lines(item.text):
            if not anything.search(line):
                continue
            kinds = line_kinds(line, default)
            shown = line.strip()
            if len(shown) > _SHOWN:
                shown = shown[: _SHOWN - 1] + "…"
            evidence = Evidence(item.name, number, shown)
            matched: set[str] = set()
            for finding_id, sig in signatures:
                if finding_id in matched or not sig.applies_to(kinds):
                    continue
                if sig.pattern.search(line):
                    matched.add(finding_id)
                    hits.setdefault(finding_id, _Hits()).add(
                        _Hit((index, number), evidence, not sig.evidence_only)
                    )
    return _report(hits, kb)


def _report(hits: dict[str, _Hits], kb: KnowledgeBase) -> list[LogFinding]:
    present = [i for i in kb.ids if i in hits and hits[i].triggered]
    explains = {i: kb.superseded_by(i) for i in present}
    reported = [i for i in present if not any(i in explains[o] for o in present if o != i)]
    lines = {i: list(hits[i].lines) for i in reported}
    counts = {i: hits[i].matches for i in reported}
    absorbed: dict[str, set[str]] = {i: set() for i in reported}
    for other, h in hits.items():
        if other in reported:
            continue
        candidates = [r for r in reported if other in explains[r]]
        if not candidates:
            continue  # evidence-only lines of a finding nothing raised
        # Each line goes to the nearest explanation: in a log with several problems, the
        # "connection cannot be established" near the SHA-1 line belongs to that one.
        for hit in h.lines:
            target = min(
                candidates,
                key=lambda r: min(_distance(hit.position, t.position) for t in hits[r].lines),
            )
            lines[target].append(_Hit(hit.position, hit.evidence, False))
            counts[target] += 1
            if hit.trigger:
                absorbed[target].add(other)
        counts[candidates[0]] += h.matches - len(h.lines)  # lines matched beyond those kept
    results = [
        LogFinding(kb.finding(i), _evidence(lines[i]), counts[i], sorted(absorbed[i]))
        for i in reported
    ]
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(results, key=lambda r: (rank[r.finding.severity], hits[r.finding.id].first))
