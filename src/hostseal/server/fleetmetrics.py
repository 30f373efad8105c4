"""The service's own figures in Prometheus text (``GET /metrics``): hosts by status, verdicts by
status, alarms not cleared, TPM change requests waiting."""

from __future__ import annotations

from sqlalchemy import Executable, func, select
from sqlalchemy.orm import Session

from hostseal.server import alarms
from hostseal.server.enrol import ENROLLED, PENDING
from hostseal.server.reporting import HOST_STATUS, NOT_REPORTING, REPORTED
from hostseal.server.storage.models import Alarm, Host, StoredVerdict, TpmChangeRequest


def _counts(session: Session, query: Executable) -> dict[str, int]:
    return {str(key): int(value) for key, value in session.execute(query)}


def metrics(session: Session) -> str:
    """Prometheus text exposition (version 0.0.4)."""
    lines = [
        "# HELP hostseal_hosts Hosts by status.",
        "# TYPE hostseal_hosts gauge",
    ]
    by_status = _counts(
        session,
        select(Host.status, func.count()).where(Host.removed_at.is_(None)).group_by(Host.status),
    )
    for status in (*REPORTED, NOT_REPORTING, PENDING, ENROLLED):
        lines.append(f'hostseal_hosts{{status="{status}"}} {by_status.get(status, 0)}')
    lines += [
        "# HELP hostseal_verdicts_total Attestation verdicts recorded, by status.",
        "# TYPE hostseal_verdicts_total counter",
    ]
    verdicts = _counts(
        session, select(StoredVerdict.status, func.count()).group_by(StoredVerdict.status)
    )
    for status in HOST_STATUS:
        lines.append(f'hostseal_verdicts_total{{status="{status}"}} {verdicts.get(status, 0)}')
    lines += [
        "# HELP hostseal_alarms_raised Alarms not cleared (raised or acknowledged), by kind.",
        "# TYPE hostseal_alarms_raised gauge",
    ]
    raised = _counts(
        session,
        select(Alarm.kind, func.count())
        .join(Alarm.host)
        .where(Alarm.state != alarms.CLEARED, Host.removed_at.is_(None))
        .group_by(Alarm.kind),
    )
    for kind in alarms.TITLES:
        lines.append(f'hostseal_alarms_raised{{kind="{kind}"}} {raised.get(kind, 0)}')
    open_requests = session.scalar(
        select(func.count()).select_from(TpmChangeRequest).where(TpmChangeRequest.state == "open")
    )
    lines += [
        "# HELP hostseal_tpm_change_requests_open TPM change requests waiting for an operator.",
        "# TYPE hostseal_tpm_change_requests_open gauge",
        f"hostseal_tpm_change_requests_open {open_requests or 0}",
    ]
    return "\n".join(lines) + "\n"
