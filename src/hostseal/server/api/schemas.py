"""Request and answer bodies of the API (pydantic), as docs/api.md describes them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EnrolStart(BaseModel):
    name: str = Field(description="The host's name (DNS-like).")
    ek_public: str = Field(description="TPM2B_PUBLIC of the EK, base64.")
    ek_certificate: str | None = Field(None, description="The EK certificate (DER), base64.")
    ak_public: str = Field(description="TPM2B_PUBLIC of the AK, base64.")


class EnrolStarted(BaseModel):
    enrolment_id: str
    credential_blob: str = Field(description="TPM2B_ID_OBJECT, base64.")
    encrypted_secret: str = Field(description="TPM2B_ENCRYPTED_SECRET, base64.")


class EnrolFinish(BaseModel):
    enrolment_id: str
    secret: str = Field(description="What TPM2_ActivateCredential returned, base64.")


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
    recovery_id: str
    kcv: str = Field(pattern=r"^[0-9a-fA-F]{32}$")


class SecureConfig(BaseModel):
    mode: str
    require_secure_boot: bool = False
    require_exec_installed_only: bool = False
    recovery_key_checks: list[RecoveryKeyCheck] = Field(default_factory=list)


class EvidenceIn(BaseModel):
    nonce: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    challenge: str = Field(
        max_length=200, description="The ticket the challenge came with, as received."
    )
    quote: str = Field(description="TPMS_ATTEST, base64.")
    signature: str = Field(description="TPMT_SIGNATURE, base64.")
    pcrs: dict[str, dict[str, str]] = Field(description='{"sha256": {"0": "<hex>", ...}}')
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
    recovery_id: str
    key: str


class EscrowIn(BaseModel):
    keys: list[EscrowKey]


class EscrowOut(BaseModel):
    escrowed: int


class ReasonIn(BaseModel):
    reason: str = ""


class CommentIn(BaseModel):
    comment: str = ""


class CaptureIn(BaseModel):
    name: str
    host: str


class AssignIn(BaseModel):
    policy: str | None
