"""Many enrolled hosts at once (rows written directly: enrolling 10,000 software TPMs through
the API would take minutes), and a verifier that counts its signature verifications."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert

from hostseal.server.context import ServerContext
from hostseal.server.storage.models import Host
from hostseal.server.verify import Verifier

from ._softtpm import SHA256, ak_tpmt_public, b2


def add_hosts(ctx: ServerContext, count: int, now: datetime, prefix: str = "fleet") -> None:
    """``count`` approved hosts, each with its own ECDSA P-256 AK, as enrolment leaves them."""
    rows: list[dict[str, Any]] = []
    for number in range(count):
        tpmt = ak_tpmt_public(ec.generate_private_key(ec.SECP256R1()))
        ek = os.urandom(64)
        rows.append(
            {
                "name": f"{prefix}{number:05d}",
                "status": "enrolled",
                "enrolled_at": now,
                "ek_public": ek,
                "ek_fingerprint": hashlib.sha256(ek).hexdigest(),
                "ek_trusted": True,
                "ak_public": b2(tpmt),
                "ak_name": (SHA256.to_bytes(2, "big") + hashlib.sha256(tpmt).digest()).hex(),
                "reconnect_allowed": False,
                "last_messages": [],
            }
        )
    with ctx.sessions.begin() as session:
        for start in range(0, len(rows), 1000):
            session.execute(insert(Host), rows[start : start + 1000])


class CountingVerifier(Verifier):
    """The real verifier, counting the quote signatures it checks: one per ``appraise`` (the
    host's own AK) and one per ``signed_by`` (another host's AK)."""

    def __init__(self, trust_store: Path) -> None:
        super().__init__(trust_store)
        self.appraisals = 0
        self.signer_checks = 0

    def appraise(self, ak_public: bytes, *args: Any, **kwargs: Any) -> Any:
        self.appraisals += 1
        return super().appraise(ak_public, *args, **kwargs)

    def signed_by(self, ak_public: bytes, quote: bytes, signature: bytes) -> bool:
        self.signer_checks += 1
        return super().signed_by(ak_public, quote, signature)

    @property
    def checks(self) -> int:
        return self.appraisals + self.signer_checks
