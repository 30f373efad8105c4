"""Refused evidence (nonce unknown, expired or replayed), audited without letting an agent grow
the audit log.

Any approved agent can send refused evidence as fast as it likes. The first refusal of a kind
(the error's name) for a host is audited at once (``attest.refused``, with the refusal's
message); the refusals that follow within ``INTERVAL`` are counted in memory and written as one
aggregate row (``details``: ``count``, ``first_at``, ``last_at``, ``aggregated``) when the interval
is over: at the next refusal, or at the instance's next background round. So a host adds at most
two rows per kind per interval per instance. ``/metrics`` counts every refusal
(``hostseal_attest_refusals_total``, by error, since the instance started).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from hostseal.server import audit
from hostseal.server.tokens import Principal

if TYPE_CHECKING:
    from hostseal.server.context import ServerContext

INTERVAL = timedelta(minutes=10)
KINDS = ("NonceUnknown", "NonceExpired", "NonceReplayed")


@dataclass
class _Window:
    """The refusals of one kind for one host since its first was audited."""

    principal: Principal
    host: str
    kind: str
    started: datetime
    last_at: datetime
    count: int = 0  # after the first


class Refusals:
    """The counters of one server instance (thread-safe: the fast path answers on threads)."""

    def __init__(self, interval: timedelta = INTERVAL) -> None:
        self.interval = interval
        self.totals: Counter[str] = Counter()
        self._windows: dict[tuple[int, str], _Window] = {}
        self._lock = threading.Lock()

    def note(
        self, principal: Principal, host_id: int, host: str, kind: str, now: datetime
    ) -> tuple[bool, list[_Window]]:
        """Count a refusal: whether to audit it now (the first of its interval), and the
        finished intervals to write as aggregate rows."""
        with self._lock:
            self.totals[kind] += 1
            window = self._windows.get((host_id, kind))
            due: list[_Window] = []
            if window is not None and now - window.started >= self.interval:
                del self._windows[(host_id, kind)]
                if window.count:
                    due.append(window)
                window = None
            if window is None:
                self._windows[(host_id, kind)] = _Window(principal, host, kind, now, now)
                return True, due
            window.count += 1
            window.last_at = now
            return False, due

    def finished(self, now: datetime) -> list[_Window]:
        """Take the intervals that are over (those with refusals to write)."""
        with self._lock:
            over = [k for k, w in self._windows.items() if now - w.started >= self.interval]
            taken = [self._windows.pop(k) for k in over]
        return [w for w in taken if w.count]


def _write(session: Session, window: _Window, now: datetime) -> None:
    audit.record(
        session,
        window.principal,
        "attest.refused",
        now=now,
        host=window.host,
        reason=(
            f"{window.count} more refusals of this host's evidence ({window.kind}) since the "
            "first was audited."
        ),
        details={
            "error": window.kind,
            "count": window.count,
            "first_at": window.started.isoformat(),
            "last_at": window.last_at.isoformat(),
            "aggregated": True,
        },
    )


def refused(
    ctx: ServerContext,
    principal: Principal,
    host_id: int,
    host: str,
    kind: str,
    message: str,
    now: datetime,
) -> None:
    """Count a refusal; audit it if it is the first of its interval (and write what is due)."""
    now_audited, due = ctx.refusals.note(principal, host_id, host, kind, now)
    if not now_audited and not due:
        return
    with ctx.sessions.begin() as session:
        for window in due:
            _write(session, window, now)
        if now_audited:
            audit.record(
                session,
                principal,
                "attest.refused",
                now=now,
                host=host,
                reason=message,
                details={"error": kind},
            )


def flush(ctx: ServerContext) -> int:
    """Write the aggregate rows of the intervals that are over; how many."""
    now = ctx.clock.now()
    due = ctx.refusals.finished(now)
    if due:
        with ctx.sessions.begin() as session:
            for window in due:
                _write(session, window, now)
    return len(due)


def metrics(refusals: Refusals) -> str:
    """Prometheus text: every refusal counted by this instance."""
    lines = [
        "# HELP hostseal_attest_refusals_total Evidence refused for its nonce (unknown, expired, "
        "replayed), by error, counted by this instance since it started.",
        "# TYPE hostseal_attest_refusals_total counter",
    ]
    for kind in KINDS:
        lines.append(f'hostseal_attest_refusals_total{{error="{kind}"}} {refusals.totals[kind]}')
    return "\n".join(lines) + "\n"
