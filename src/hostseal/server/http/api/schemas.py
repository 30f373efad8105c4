"""Request and answer bodies of the API (pydantic), as docs/api.md describes them.

Every request field has a bound (docs/api.md, "Limits"): names follow the host-name rule (a full
match), texts and binary values have a maximum length, lists and maps a maximum size. The whole
body is bounded before it is parsed (:mod:`hostseal.server.http.guard`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

# the rule of hostseal.server.enrol.check_name, for pydantic (its regex engine: "$" is the end)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$"
MAX_NAME = 253
MAX_TEXT = 1000  # characters of a reason or a comment
MAX_PUBLIC = 2048  # bytes of a TPM2B_PUBLIC (an RSA-4096 key with a policy is under 700)
MAX_EK_CERTIFICATE = 16 * 1024  # bytes of a DER EK certificate (real ones are 1-2 KiB)
MAX_QUOTE = 2048  # bytes of a TPMS_ATTEST
MAX_SIGNATURE = 1024  # bytes of a TPMT_SIGNATURE (RSA-4096: 518)
MAX_SECRET = 128  # bytes of an activated credential (a digest)
MAX_ITEMS = 64  # recovery keys escrowed or checked in one request


def b64_length(size: int) -> int:
    """The length of ``size`` bytes in padded base64."""
    return 4 * ((size + 2) // 3)


HostName = Annotated[
    str,
    Field(
        max_length=MAX_NAME,
        pattern=NAME_PATTERN,
        description="Letters, digits, '.', '-', '_'; at most 253 characters.",
    ),
]
# in bodies only the length: the route's own check (enrol.check_name) says what is wrong
BodyName = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class EnrolStart(BaseModel):
    name: BodyName = Field(description="The host's name (DNS-like).")
    ek_public: str = Field(
        max_length=b64_length(MAX_PUBLIC), description="TPM2B_PUBLIC of the EK, base64."
    )
    ek_certificate: str | None = Field(
        None,
        max_length=b64_length(MAX_EK_CERTIFICATE),
        description="The EK certificate (DER, at most 16 KiB), base64.",
    )
    ak_public: str = Field(
        max_length=b64_length(MAX_PUBLIC), description="TPM2B_PUBLIC of the AK, base64."
    )
    enrolment_token: str | None = Field(
        None,
        max_length=100,
        description="An enrolment token (hostseal host enrolment-token), needed when the server "
        "runs with HOSTSEAL_SERVER_ENROLMENT=token.",
    )


class EnrolmentTokenIn(BaseModel):
    host: HostName | None = Field(None, description="The one host name it enrols (used once).")
    uses: int = Field(1, ge=1, le=1000, description="Enrolments of new hosts (batch token).")
    hours: int = Field(24, ge=1, le=720, description="How long it is valid.")
    reason: Text = ""


class EnrolStarted(BaseModel):
    enrolment_id: str
    credential_blob: str = Field(description="TPM2B_ID_OBJECT, base64.")
    encrypted_secret: str = Field(description="TPM2B_ENCRYPTED_SECRET, base64.")


class EnrolFinish(BaseModel):
    enrolment_id: str = Field(max_length=100)
    secret: str = Field(
        max_length=b64_length(MAX_SECRET),
        description="What TPM2_ActivateCredential returned, base64.",
    )


class EnrolFinished(BaseModel):
    host: str
    agent_token: str
    status: Literal["enrolled", "pending-approval"]


class ChallengeOut(BaseModel):
    nonce: str = Field(description="32 bytes, hex; single use. Quote it as the qualifying data.")
    challenge: str = Field(description="The challenge's ticket: send it back with the evidence.")
    expires_at: str
    bank: str
    pcrs: list[int]
    eventlog_sha256: str | None = Field(
        None,
        description="SHA-256 (hex) of the event log the server holds for this host: when the "
        "host's log has this digest, the evidence may send eventlog_sha256 instead of the log.",
    )


class RecoveryKeyCheck(BaseModel):
    recovery_id: str = Field(max_length=64)
    kcv: str = Field(pattern=r"^[0-9a-fA-F]{32}$")


class SecureConfig(BaseModel):
    mode: str = Field(max_length=32)
    require_secure_boot: bool = False
    require_exec_installed_only: bool = False
    recovery_key_checks: list[RecoveryKeyCheck] = Field(default_factory=list, max_length=MAX_ITEMS)


PcrValues = Annotated[
    dict[Annotated[str, Field(max_length=3)], Annotated[str, Field(max_length=128)]],
    Field(max_length=32),
]


class EvidenceIn(BaseModel):
    nonce: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    challenge: str = Field(
        max_length=200, description="The ticket the challenge came with, as received."
    )
    quote: str = Field(max_length=b64_length(MAX_QUOTE), description="TPMS_ATTEST, base64.")
    signature: str = Field(
        max_length=b64_length(MAX_SIGNATURE), description="TPMT_SIGNATURE, base64."
    )
    pcrs: dict[Annotated[str, Field(max_length=16)], PcrValues] = Field(
        max_length=8, description='{"sha256": {"0": "<hex>", ...}}'
    )
    eventlog: str | None = Field(None, description="The TCG event log, base64.")
    eventlog_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Instead of the log: its SHA-256, when the challenge named the same digest.",
    )
    secure_config: SecureConfig | None = None


class VerdictOut(BaseModel):
    status: Literal["Passed", "Failed", "Warning"]
    messages: list[str]


class EscrowKey(BaseModel):
    recovery_id: str = Field(max_length=64)
    key: str = Field(max_length=128)


class EscrowIn(BaseModel):
    keys: list[EscrowKey] = Field(max_length=MAX_ITEMS)


class EscrowOut(BaseModel):
    escrowed: int


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
