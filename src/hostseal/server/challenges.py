"""Challenges that need no database row: the nonce travels with a signed ticket.

A challenge is a fresh 32-byte nonce for one host, valid until ``expires``. Instead of storing it,
the server gives the agent a ticket: ``version | host id | expiry | nonce`` and an HMAC-SHA-256
of them under a key derived from the server key (:meth:`ServerKey.mac_key`). The agent quotes
the nonce and sends the ticket back with the evidence; any instance with the same server key can
check it, so a challenge issued by one instance is answered at another with no shared state.

Single use is kept where the evidence is kept: each verdict records its nonce under a unique
constraint, so a quote is accepted once, whichever instances see it (a replay gets 409
``NonceReplayed``). A refused nonce (unknown, expired) stores nothing, so the agent simply asks
for a new challenge.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hostseal.server.errors import NonceExpired, NonceUnknown

PURPOSE = "attestation challenge v1"
_VERSION = 1
_LAYOUT = struct.Struct(">BQQ32s")  # version, host id, expiry (ms since the epoch), nonce
_MAC = 32


@dataclass(frozen=True)
class Challenge:
    nonce: bytes
    ticket: str
    expires_at: datetime


def issue(key: bytes, host_id: int, now: datetime, lifetime: timedelta) -> Challenge:
    """A fresh nonce for ``host_id`` and its ticket, valid for ``lifetime``."""
    nonce = secrets.token_bytes(32)
    expires = now + lifetime
    body = _LAYOUT.pack(_VERSION, host_id, int(expires.timestamp() * 1000), nonce)
    mac = hmac.new(key, body, "sha256").digest()
    return Challenge(nonce, base64.urlsafe_b64encode(body + mac).decode("ascii"), expires)


def check(key: bytes, ticket: str, *, host_id: int, host: str, nonce: bytes, now: datetime) -> None:
    """Raise unless ``ticket`` was issued (under ``key``) to ``host_id`` for ``nonce`` and has not
    expired. Single use is checked by the caller (the verdicts' unique nonce)."""
    short = nonce.hex()[:16]
    unknown = NonceUnknown(
        f"The nonce {short}... was not issued to host {host!r} by this service (its challenge "
        "ticket does not verify).",
        "Ask for a challenge (POST /v1/attest/challenge), quote its nonce and send its "
        "'challenge' ticket back with the evidence. Instances of one service must share the "
        "server key (server.key): a ticket from an instance with another key does not verify.",
    )
    try:
        raw = base64.urlsafe_b64decode(ticket.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise unknown from None
    if len(raw) != _LAYOUT.size + _MAC:
        raise unknown
    body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if not hmac.compare_digest(hmac.new(key, body, "sha256").digest(), mac):
        raise unknown
    version, issued_to, expires_ms, issued_nonce = _LAYOUT.unpack(body)
    if version != _VERSION or issued_to != host_id or not hmac.compare_digest(issued_nonce, nonce):
        raise unknown
    expires = datetime.fromtimestamp(expires_ms / 1000, UTC)
    if now >= expires:
        raise NonceExpired(
            f"The nonce {short}... expired at {expires.isoformat()} (nonces are valid for a "
            "limited time).",
            "Ask for a new challenge and send the quote at once.",
        )
