"""The host-name rule of the service: what a host may be called (as a DNS name, at most 253
characters), checked with a full match wherever a name arrives (enrolment, policies, enrolment
tokens; the HTTP layer applies the same rule to path and query parameters)."""

from __future__ import annotations

import re

from hostseal.server.errors import Unprocessable

MAX_LENGTH = 253
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")  # fullmatch: no trailing newline


def check_name(name: str) -> str:
    """``name`` if it is a host name; raises :class:`Unprocessable` saying the rule otherwise."""
    if not _HOST_NAME.fullmatch(name):
        raise Unprocessable(
            f"{name[:80]!r} is not a host name.",
            "Use letters, digits, '.', '-' and '_' (at most 253 characters), as in a DNS name.",
        )
    return name
