"""What crosses HTTP between a host and the attestation service (pydantic), as docs/api.md
describes it: enrolment, challenge, evidence, verdict, escrow, a host's own status.

The one model of these bodies: the server validates requests with it and answers with it, the
agent and key release build their requests from it and read the answers with it, the tests build
evidence with :meth:`EvidenceIn.of_quote`. Every request field has a bound (docs/api.md,
"Limits"): texts and binary values have a maximum length, lists and maps a maximum size.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, Field

MAX_NAME = 253  # characters of a host name
MAX_PUBLIC = 2048  # bytes of a TPM2B_PUBLIC (an RSA-4096 key with a policy is under 700)
MAX_EK_CERTIFICATE = 16 * 1024  # bytes of a DER EK certificate (real ones are 1-2 KiB)
MAX_QUOTE = 2048  # bytes of a TPMS_ATTEST
MAX_SIGNATURE = 1024  # bytes of a TPMT_SIGNATURE (RSA-4096: 518)
MAX_SECRET = 128  # bytes of an activated credential (a digest)
MAX_ITEMS = 64  # recovery keys escrowed or checked in one request


def b64_length(size: int) -> int:
    """The length of ``size`` bytes in padded base64."""
    return 4 * ((size + 2) // 3)


def b64(data: bytes) -> str:
    """``data`` as the API writes binary values: padded base64."""
    return base64.b64encode(data).decode()


# in bodies only the length: the route's own check (the host-name rule) says what is wrong
BodyName = Annotated[str, Field(max_length=MAX_NAME)]


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

    @classmethod
    def of_quote(
        cls,
        *,
        nonce: str,
        challenge: str,
        quote: bytes,
        signature: bytes,
        pcrs: Mapping[str, Mapping[int, bytes]],
        eventlog: bytes | None,
        eventlog_sha256: str | None = None,
        secure_config: SecureConfig | None = None,
    ) -> EvidenceIn:
        """The evidence for the challenge (``nonce`` in hex, its ticket ``challenge``): the
        quote (TPMS_ATTEST) and its signature (TPMT_SIGNATURE), the quoted PCR values per bank,
        and the event log, or ``eventlog_sha256`` instead of it."""
        return cls(
            nonce=nonce,
            challenge=challenge,
            quote=b64(quote),
            signature=b64(signature),
            pcrs={bank: {str(i): v.hex() for i, v in held.items()} for bank, held in pcrs.items()},
            eventlog=b64(eventlog) if eventlog is not None else None,
            eventlog_sha256=eventlog_sha256,
            secure_config=secure_config,
        )


class VerdictOut(BaseModel):
    status: Literal["Passed", "Failed", "Warning"]
    messages: list[str]


class AttestStatus(BaseModel):
    """A host's attestation status as its agent token sees it (``GET /v1/attest/status``)."""

    host: str
    status: str = Field(
        description="As hostseal host show gives it: passed only while its last attestation "
        "passed and is current."
    )
    messages: list[str] = Field(default_factory=list)
    last_attested_at: str | None = None


class EscrowKey(BaseModel):
    recovery_id: str = Field(max_length=64)
    key: str = Field(max_length=128)


class EscrowIn(BaseModel):
    keys: list[EscrowKey] = Field(max_length=MAX_ITEMS)


class EscrowOut(BaseModel):
    escrowed: int
