"""Errors of :mod:`hostseal.attest`: one base, :class:`AttestError`, and one subclass per failure
a caller can act on. Every message says what happened; every remedy says what to do; ``details``
carries the data (expected and actual values, where in the bytes) for ``--json`` and the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hostseal.errors import HostsealError
from hostseal.measure.errors import EventLogReplayMismatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hostseal.measure.replay import PcrMismatch


class AttestError(HostsealError):
    """Attestation evidence could not be verified."""


# --- quote verification (hostseal.attest.tpm_structures, hostseal.attest.quote) --------------

MALFORMED_REMEDY = (
    "The evidence is damaged or is not what hostseal expects: send the bytes the TPM produced, "
    "as tpm2-tools writes them (tpm2_quote -m for the quote, -s for the signature, "
    "tpm2_createak -u or a PEM public key for the AK). If the host's agent sent them, check "
    "that the agent and the server run the same hostseal version."
)


class QuoteMalformed(AttestError):
    """A TPM structure (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC...) or a PCR value is not
    well-formed. ``structure`` and ``offset`` say where."""

    def __init__(
        self,
        message: str,
        remedy: str = MALFORMED_REMEDY,
        *,
        structure: str | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message, remedy, {"structure": structure, "offset": offset})
        self.structure = structure
        self.offset = offset

    @classmethod
    def at(cls, structure: str, offset: int, what: str) -> QuoteMalformed:
        """``"TPMS_ATTEST at offset 38 (0x26): <what>."``"""
        return cls(
            f"{structure} at offset {offset} (0x{offset:x}): {what}.",
            structure=structure,
            offset=offset,
        )


class NotAQuote(AttestError):
    """The attestation is not a TPM quote: wrong magic (not TPM-generated) or another type."""


class AkUnsuitable(AttestError):
    """The key given as the AK cannot vouch for quotes (not a restricted signing key)."""


class QuoteSignatureInvalid(AttestError):
    """The quote's signature does not verify with the attestation key."""


class NonceMismatch(AttestError):
    """The quote's extraData is not the nonce the verifier sent (stale or replayed quote)."""


class PcrSelectionMismatch(AttestError):
    """The PCRs presented are not exactly the PCRs the quote selected (or it selected none)."""


class PcrDigestMismatch(AttestError):
    """The PCR values presented do not hash to the quote's pcrDigest."""


class QuoteEventLogMismatch(EventLogReplayMismatch, AttestError):
    """The event log does not replay to the quoted PCR values.

    Both an :class:`~hostseal.measure.EventLogReplayMismatch` (``mismatches`` names each PCR,
    its replayed and quoted value and its events) and an :class:`AttestError`.
    """

    def __init__(self, mismatches: Sequence[PcrMismatch]) -> None:
        super().__init__(mismatches)
        names = ", ".join(f"{m.bank} PCR {m.pcr}" for m in mismatches)
        self.message = (
            f"The event log does not replay to the quoted PCR values: {names} differ from "
            "the replayed log."
        )
        self.args = (self.message,)
        self.remedy = (
            "The log is incomplete or was altered, or something was measured without being "
            "logged: do not trust this host's measurements. Send the log and a new quote from "
            "the same boot; if they still differ, reboot the host and investigate the events "
            "of the PCRs named."
        )


# --- enrolment (hostseal.attest.credential, hostseal.attest.ekcert) --------------------------

EK_PUBLIC_REMEDY = (
    "Send the EK public area the TPM reports (tpm2_createek -u ek.pub, or tpm2_readpublic of the "
    "persistent EK at 0x81010001 / 0x81010002) as a TPM2B_PUBLIC. If the host's agent sent it, "
    "check that the agent and the server run the same hostseal version."
)


class EkPublicInvalid(AttestError):
    """The EK public area a host sent is not a TPM2B_PUBLIC / TPMT_PUBLIC of a usable EK."""

    def __init__(self, message: str, remedy: str = EK_PUBLIC_REMEDY) -> None:
        super().__init__(message, remedy)


class AkNameInvalid(AttestError):
    """The AK name a host sent is not a TPM name (nameAlg followed by a digest of its size)."""


class EkCertificateMalformed(AttestError):
    """The EK certificate (or a CA certificate) is not a certificate hostseal can read."""


class EkCertificateUntrusted(AttestError):
    """The EK certificate does not chain to a trusted TPM vendor CA, or is not valid now.

    ``reason`` is a stable id: ``empty_store``, ``no_issuer``, ``bad_signature``, ``expired``,
    ``not_yet_valid``, ``not_a_ca``, ``unsupported_critical_extension``,
    ``unsupported_signature_algorithm``.
    """

    def __init__(self, message: str, remedy: str, *, reason: str) -> None:
        super().__init__(message, remedy, {"reason": reason})
        self.reason = reason


class EkCertificateMismatch(AttestError):
    """The EK certificate certifies another key than the EK the host presented."""


class TrustStoreInvalid(AttestError):
    """A trust-store path names no file or directory, or a file in it is not a certificate."""


# --- reference policies (hostseal.attest.policy) ---------------------------------------------


class PolicyInvalid(AttestError):
    """A reference policy is malformed, or would accept hosts it cannot check.

    ``field`` names the offending field (``"pcrs.sha256.7"``), when there is one.
    """

    def __init__(self, message: str, remedy: str, *, field: str | None = None) -> None:
        super().__init__(message, remedy, {"field": field})
        self.field = field
