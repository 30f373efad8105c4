"""Request and answer bodies of the operators' API (pydantic), as docs/api.md describes them;
the bodies a host exchanges with the service (enrolment, challenge, evidence, verdict, escrow,
its own status) are the wire models of :mod:`hostseal.client.wire`.

Every request field has a bound (docs/api.md, "Limits"): names follow the host-name rule (a full
match), texts and binary values have a maximum length, lists and maps a maximum size. The whole
body is bounded before it is parsed (:mod:`hostseal.server.http.guard`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from hostseal.client.wire import MAX_NAME, BodyName

# the rule of hostseal.server.hostnames.check_name, for pydantic (its regex engine: "$" is the end)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$"
MAX_TEXT = 1000  # characters of a reason or a comment


HostName = Annotated[
    str,
    Field(
        max_length=MAX_NAME,
        pattern=NAME_PATTERN,
        description="Letters, digits, '.', '-', '_'; at most 253 characters.",
    ),
]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class EnrolmentTokenIn(BaseModel):
    host: HostName | None = Field(None, description="The one host name it enrols (used once).")
    uses: int = Field(1, ge=1, le=1000, description="Enrolments of new hosts (batch token).")
    hours: int = Field(24, ge=1, le=720, description="How long it is valid.")
    reason: Text = ""


class ReasonIn(BaseModel):
    reason: Text = ""


class CommentIn(BaseModel):
    comment: Text = ""


class CaptureIn(BaseModel):
    name: BodyName
    host: BodyName
    reason: Text = Field("", description="Why (required; kept in the audit log).")


class AssignIn(BaseModel):
    policy: BodyName | None
    reason: Text = Field("", description="Why (required; kept in the audit log).")


class TokenIn(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$",
        description="Who holds the token (letters, digits, '_', '.', '@', '+', '-').",
    )
    role: str = Field(description="viewer, operator or admin.")
    reason: str = Field("", description="Why (required; kept in the audit log).")


class TokenCreated(BaseModel):
    name: str
    role: str
    token: str = Field(description="The token itself: shown this once, stored only as a hash.")


class TokenOut(BaseModel):
    name: str
    role: str
    created_at: str
    revoked_at: str | None
