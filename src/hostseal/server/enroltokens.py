"""Enrolment tokens: for sites that want no open enrolment (``HOSTSEAL_SERVER_ENROLMENT=token``).

An admin makes a token for one host name (used once) or for a batch of new hosts (``uses``
enrolments of names that are not enrolled); it expires (default 24 h). The service keeps only its
SHA-256. ``enrol/start`` checks it; ``enrol/finish`` uses it up, once the TPM proved possession of
its EK. A token never lets an enrolment change an existing host: a known name with another EK is
still a TPM change request (:mod:`hostseal.server.enrol`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostseal.server import audit
from hostseal.server.context import ServerContext
from hostseal.server.errors import Unauthenticated, Unprocessable
from hostseal.server.hostnames import check_name
from hostseal.server.storage.models import EnrolmentToken, Host
from hostseal.server.tokens import Principal

PREFIX = "hse_"
MAX_USES = 1000
MAX_LIFETIME = timedelta(days=30)


class EnrolmentTokenRefused(Unauthenticated):
    """Enrolment needs a valid enrolment token here, and this one is missing, unknown, used up,
    expired or for another host name."""


@dataclass(frozen=True)
class Made:
    token: str
    host: str | None
    uses: int
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make(
    ctx: ServerContext,
    who: Principal,
    *,
    host: str | None,
    uses: int,
    lifetime: timedelta,
    reason: str,
) -> Made:
    """A new enrolment token, shown once (audited with the reason, never the token)."""
    reason = audit.require_reason(reason, "make an enrolment token")
    if host is not None:
        check_name(host)
        uses = 1
    if not 1 <= uses <= MAX_USES:
        raise Unprocessable(
            f"An enrolment token is good for 1 to {MAX_USES} enrolments, not {uses}.",
            "Give --uses between 1 and 1000, or one token per host with --host.",
        )
    if not timedelta(minutes=1) <= lifetime <= MAX_LIFETIME:
        raise Unprocessable(
            "An enrolment token lasts from 1 minute to 30 days.", "Give --hours from 1 to 720."
        )
    token = PREFIX + secrets.token_urlsafe(32)
    now = ctx.clock.now()
    with ctx.sessions.begin() as session:
        row = EnrolmentToken(
            token_sha256=_hash(token),
            host_name=host,
            uses_left=uses,
            created_at=now,
            expires_at=now + lifetime,
            created_by=who.name,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            who,
            "enrolment-token.created",
            now=now,
            host=host,
            reason=reason,
            details={"token_id": row.id, "uses": uses, "expires_at": row.expires_at.isoformat()},
        )
    return Made(token, host, uses, now + lifetime)


def _refused(why: str) -> EnrolmentTokenRefused:
    return EnrolmentTokenRefused(
        f"This server enrols hosts only with an enrolment token, and {why}.",
        "Ask an admin for a token (hostseal host enrolment-token --host NAME --reason ...) and "
        "give it to the agent in a file: hostseal agent run --enrolment-token-file FILE.",
    )


def used_up() -> EnrolmentTokenRefused:
    return _refused("its enrolment token was used up by another enrolment meanwhile")


def check(session: Session, token: str | None, name: str, now: datetime) -> int:
    """The id of the token that lets ``name`` enrol now; raises (401) otherwise."""
    if not token:
        raise _refused("this request carries none")
    row = session.scalar(select(EnrolmentToken).where(EnrolmentToken.token_sha256 == _hash(token)))
    if row is None:
        raise _refused("this token is not one it made")
    if row.uses_left < 1:
        raise _refused("this token was used up")
    if now >= row.expires_at:
        raise _refused(f"this token expired at {row.expires_at.isoformat()}")
    if row.host_name is not None and row.host_name != name:
        raise _refused(f"this token is for host {row.host_name!r}, not {name!r}")
    if row.host_name is None:
        known = session.scalar(select(Host.id).where(Host.name == name, Host.removed_at.is_(None)))
        if known is not None:
            raise _refused(f"a batch token enrols new hosts only, and {name!r} is enrolled")
    return row.id


def use(session: Session, token_id: int) -> bool:
    """Use the token once (at enrol/finish); False when it was used up meanwhile."""
    used = session.execute(
        update(EnrolmentToken)
        .where(EnrolmentToken.id == token_id, EnrolmentToken.uses_left > 0)
        .values(uses_left=EnrolmentToken.uses_left - 1)
    ).rowcount  # type: ignore[attr-defined]
    return bool(used == 1)
