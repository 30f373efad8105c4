"""Attestation, pure: evidence in, a result or an :class:`AttestError` out.

Every module here is pure: no files, sockets, database or TPM (and no tpm2-pytss: TPM
structures are parsed by hand). Callers load what is on disk -- event logs, the TPM CA trust
store (:mod:`hostseal.truststore`), tpm2-tools files (read from bytes by
:mod:`~hostseal.attest.tpm2tools`); :func:`make_credential`'s randomness is a parameter.

>>> ak = load_ak_public(ak_pub)                                            # doctest: +SKIP
>>> verify_quote(ak, attest, signature, nonce=nonce, pcrs={"sha256": {0: v0, 7: v7}},
...              eventlog=log)                                             # doctest: +SKIP
"""

from hostseal.attest.credential import make_credential
from hostseal.attest.ekcert import (
    DEFAULT_TPM_CA_DIR,
    EkCertificate,
    StoreSource,
    TrustStore,
    read_ek_certificate,
    verify_ek_certificate,
)
from hostseal.attest.errors import (
    AkNameInvalid,
    AkUnsuitable,
    AttestError,
    EkCertificateMalformed,
    EkCertificateMismatch,
    EkCertificateUntrusted,
    EkPublicInvalid,
    NonceMismatch,
    NotAQuote,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    PolicyInvalid,
    QuoteEventLogMismatch,
    QuoteMalformed,
    QuoteSignatureInvalid,
    TrustStoreInvalid,
)
from hostseal.attest.policy import AllowedApplication, ReferencePolicy, capture_policy
from hostseal.attest.quote import (
    Quote,
    QuoteResult,
    check_pcr_values,
    parse_quote,
    pcr_digest,
    verify_quote,
    verify_signed_quote,
)
from hostseal.attest.tpm_structures import (
    Attest,
    ClockInfo,
    PcrSelection,
    Signature,
    parse_attest,
    parse_signature,
)
from hostseal.attest.tpmkey import AkPublic, TpmPublic, load_ak_public, parse_public
from hostseal.attest.verdict import Finding, Verdict, evaluate

__all__ = [
    "DEFAULT_TPM_CA_DIR",
    "AkNameInvalid",
    "AkPublic",
    "AkUnsuitable",
    "AllowedApplication",
    "Attest",
    "AttestError",
    "ClockInfo",
    "EkCertificate",
    "EkCertificateMalformed",
    "EkCertificateMismatch",
    "EkCertificateUntrusted",
    "EkPublicInvalid",
    "Finding",
    "NonceMismatch",
    "NotAQuote",
    "PcrDigestMismatch",
    "PcrSelection",
    "PcrSelectionMismatch",
    "PolicyInvalid",
    "Quote",
    "QuoteEventLogMismatch",
    "QuoteMalformed",
    "QuoteResult",
    "QuoteSignatureInvalid",
    "ReferencePolicy",
    "Signature",
    "StoreSource",
    "TpmPublic",
    "TrustStore",
    "TrustStoreInvalid",
    "Verdict",
    "capture_policy",
    "check_pcr_values",
    "evaluate",
    "load_ak_public",
    "make_credential",
    "parse_attest",
    "parse_public",
    "parse_quote",
    "parse_signature",
    "pcr_digest",
    "read_ek_certificate",
    "verify_ek_certificate",
    "verify_quote",
    "verify_signed_quote",
]
