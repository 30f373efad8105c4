"""The one place where the service calls :mod:`hostseal.attest` (pure verification).

:class:`Verifier` holds what the calls need beyond their arguments (the TPM vendors' trust
store) and answers in attest's own types: an :class:`~hostseal.attest.appraise.Appraisal`, a
:class:`~hostseal.attest.Verdict`. Its errors are attest's, or the service's own where the HTTP
status says more (:class:`AkRefused`, :class:`~hostseal.server.errors.PolicyRefused`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hostseal.attest import (
    AkPublic,
    EkCertificateUntrusted,
    PolicyInvalid,
    ReferencePolicy,
    TrustStore,
    Verdict,
    capture_policy,
    evaluate,
    load_ak_public,
    make_credential,
    verify_ek_certificate,
    verify_quote,
)
from hostseal.attest.appraise import Appraisal, Judged, appraise
from hostseal.errors import HostsealError
from hostseal.measure import EventLog, parse_event_log
from hostseal.server.errors import PolicyRefused, Unprocessable
from hostseal.truststore import load_trust_store

DEFAULT_BANK = "sha256"
DEFAULT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
ATTR_FIXED_TPM = 0x00000002  # TPMA_OBJECT fixedTPM

Pcrs = Mapping[str, Mapping[int, bytes]]


class AkRefused(Unprocessable):
    """The key a host presents as its AK cannot be an attestation key."""


@dataclass(frozen=True)
class PolicyFacts:
    """A stored policy as the service uses it: its name, its document (whose SHA-256,
    ``digest``, names this version of the policy) and the document parsed (``policy``), with the
    bank and PCRs a quote must cover."""

    name: str
    document: str
    policy: ReferencePolicy

    @property
    def bank(self) -> str:
        return self.policy.quote_bank

    @property
    def pcrs(self) -> tuple[int, ...]:
        return tuple(self.policy.quote_pcrs)

    @functools.cached_property
    def digest(self) -> str:
        return document_digest(self.document)


def document_digest(document: str) -> str:
    """SHA-256 (hex) of a policy document as stored."""
    return hashlib.sha256(document.encode()).hexdigest()


def ek_fingerprint(ek_public: bytes) -> str:
    """SHA-256 of the EK's TPM2B_PUBLIC, hex (what ``hostseal tpm`` shows as the EK)."""
    return hashlib.sha256(ek_public).hexdigest()


class Verifier:
    """:mod:`hostseal.attest` for the service, with the trust store of TPM vendor CAs (read
    when first needed)."""

    def __init__(self, trust_store: Path) -> None:
        self._trust_dir = trust_store
        self._store: TrustStore | None = None

    def ak_name(self, ak_public: bytes) -> bytes:
        ak = load_ak_public(ak_public)
        if ak.public is None or ak.name is None:
            raise AkRefused(
                "The AK was sent as a plain public key; enrolment needs its TPM2B_PUBLIC.",
                "Send the AK's public area as the TPM reports it (tpm2_createak -u ak.pub).",
            )
        if not ak.public.restricted_signing or not ak.public.attributes & ATTR_FIXED_TPM:
            raise AkRefused(
                "The AK is not a restricted signing key fixed to its TPM, so it could sign "
                "data that only looks like a quote.",
                "Create the AK with the restricted, sign and fixedTPM attributes "
                "(tpm2_createak does).",
            )
        return ak.name

    def make_credential(
        self, ek_public: bytes, ak_name: bytes, secret: bytes
    ) -> tuple[bytes, bytes]:
        return make_credential(ek_public, ak_name, secret)

    def _trust_store(self) -> TrustStore:
        if self._store is None:
            self._store = load_trust_store(self._trust_dir)
        return self._store

    def ek_certificate_trusted(self, certificate: bytes, ek_public: bytes, at: datetime) -> bool:
        """True when the certificate chains to the trust store; False when it does not (or the
        store is empty); raises when it is unreadable or certifies another key."""
        try:
            verify_ek_certificate(certificate, self._trust_store(), ek_public=ek_public, at=at)
        except EkCertificateUntrusted:
            return False
        return True

    def ek_vendor(self, certificate: bytes, ek_public: bytes, at: datetime) -> str | None:
        """The TPM vendor a trusted EK certificate names (``"Intel (INTC)"``), else None: an
        untrusted certificate's vendor attribute is not shown, as nobody vouches for it."""
        try:
            cert = verify_ek_certificate(
                certificate, self._trust_store(), ek_public=ek_public, at=at
            )
        except EkCertificateUntrusted:
            return None
        if cert.vendor is None:
            return None
        return f"{cert.vendor_name} ({cert.vendor})" if cert.vendor_name else cert.vendor

    def appraise(
        self,
        ak_public: bytes,
        quote: bytes,
        signature: bytes,
        *,
        nonce: bytes,
        pcrs: Pcrs,
        policy: PolicyFacts | None,
        eventlog: bytes | None,
        eventlog_sha256: str | None,
        judged: Judged | None,
    ) -> Appraisal:
        """Verify the quote and judge it by ``policy`` (:func:`hostseal.attest.appraise`),
        reusing ``judged``, the host's last full appraisal, when the evidence is of the same
        boot, log and policy. Without a policy the quote and log are verified and nothing is
        judged (status "Warning", no key: the caller says why). A log named by its digest and
        needed raises :class:`~hostseal.attest.appraise.EventLogUnavailable`: ask again with
        its bytes."""
        ak = _load_ak(ak_public)
        if policy is None:
            result = verify_quote(ak, quote, signature, nonce=nonce, pcrs=pcrs, eventlog=eventlog)
            digest = hashlib.sha256(eventlog).hexdigest() if eventlog is not None else None
            values = {bank: dict(v) for bank, v in result.pcrs.items()}
            return Appraisal(
                "Warning", (), None, result.quote, values, digest, result.eventlog, None, False
            )
        return appraise(
            ak,
            quote,
            signature,
            nonce=nonce,
            pcrs=pcrs,
            policy=policy.policy,
            policy_sha256=policy.digest,
            eventlog=eventlog,
            eventlog_sha256=eventlog_sha256,
            judged=judged,
        )

    def signed_by(self, ak_public: bytes, quote: bytes, signature: bytes) -> bool:
        """True when ``signature`` over ``quote`` verifies with ``ak_public``."""
        try:  # a nonce no quote has: the signature is checked first, then the nonce fails
            verify_quote(_load_ak(ak_public), quote, signature, nonce=b"\0" * 65, pcrs={})
        except HostsealError as exc:
            checks = exc.details.get("checks")
            return isinstance(checks, dict) and checks.get("signature") == "passed"
        return True

    def check_policy(self, name: str, document: str) -> PolicyFacts:
        """The policy ``document`` parsed (:class:`~hostseal.server.errors.PolicyRefused` when
        it is not one), stored as its canonical JSON."""
        try:
            policy = ReferencePolicy.from_json(document)
        except PolicyInvalid as exc:
            raise PolicyRefused(exc.message, exc.remedy, exc.details) from exc
        return PolicyFacts(name, policy.to_json(), policy)

    def evaluate(self, policy: PolicyFacts, pcrs: Pcrs, eventlog: EventLog | None) -> Verdict:
        """The verdict of ``policy`` on verified PCR values and their replayed event log."""
        return evaluate(policy.policy, pcrs, eventlog)

    def capture(self, name: str, eventlog: bytes | None, pcrs: Pcrs) -> PolicyFacts:
        parsed = parse_event_log(eventlog) if eventlog else None
        try:
            policy = capture_policy(name, parsed, pcrs)
        except PolicyInvalid as exc:
            raise PolicyRefused(exc.message, exc.remedy, exc.details) from exc
        return PolicyFacts(name, policy.to_json(), policy)


@functools.lru_cache(maxsize=65536)
def _load_ak(ak_public: bytes) -> AkPublic:
    """A host's parsed AK, kept (an EC point or RSA modulus costs tens of µs to load); bounded,
    a few KB per host."""
    return load_ak_public(ak_public)
