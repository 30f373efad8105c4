"""The one place where the service calls :mod:`hostseal.attest` (pure verification).

The service talks to a :class:`Verifier`; :class:`AttestVerifier` is the real one. Everything the
service needs from evidence and policies goes through here, so the rest of ``server/`` never
depends on the shape of ``hostseal.attest``'s types.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from hostseal.errors import HostsealError
from hostseal.server.errors import EventLogUnknown, PolicyRefused, Unprocessable

DEFAULT_BANK = "sha256"
DEFAULT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
ATTR_FIXED_TPM = 0x00000002  # TPMA_OBJECT fixedTPM

Pcrs = Mapping[str, Mapping[int, bytes]]


class AkRefused(Unprocessable):
    """The key a host presents as its AK cannot be an attestation key."""


@dataclass(frozen=True)
class CheckedEvidence:
    """A quote whose signature, nonce and PCR digest verified, with its event log."""

    pcrs: dict[str, dict[int, bytes]]
    eventlog: bytes | None
    parsed: Any = None


@dataclass(frozen=True)
class Outcome:
    status: str  # "Passed" | "Failed" | "Warning"
    messages: list[str]
    findings: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Appraised:
    """A verified quote and its outcome. ``key`` is the appraisal key (None without a policy),
    ``reused`` says the outcome of the host's last full appraisal was reused (same boot, log and
    policy), ``pcrs`` are the verified values, ``eventlog_sha256`` names the log."""

    outcome: Outcome
    key: str | None
    reused: bool
    pcrs: dict[str, dict[int, bytes]]
    eventlog_sha256: str | None


@dataclass(frozen=True)
class PolicyFacts:
    """What the service needs to know of a policy: the bank and PCRs a quote must cover, and the
    document with its SHA-256 (``digest``), which names this version of the policy."""

    name: str
    bank: str
    pcrs: tuple[int, ...]
    document: str

    @functools.cached_property
    def digest(self) -> str:
        return document_digest(self.document)


def document_digest(document: str) -> str:
    """SHA-256 (hex) of a policy document as stored."""
    return hashlib.sha256(document.encode()).hexdigest()


def ek_fingerprint(ek_public: bytes) -> str:
    """SHA-256 of the EK's TPM2B_PUBLIC, hex (what ``hostseal tpm`` shows as the EK)."""
    return hashlib.sha256(ek_public).hexdigest()


class Verifier(Protocol):
    def ak_name(self, ak_public: bytes) -> bytes: ...

    def make_credential(
        self, ek_public: bytes, ak_name: bytes, secret: bytes
    ) -> tuple[bytes, bytes]: ...

    def ek_certificate_trusted(
        self, certificate: bytes, ek_public: bytes, at: datetime
    ) -> bool: ...

    def ek_vendor(self, certificate: bytes, ek_public: bytes, at: datetime) -> str | None: ...

    def appraise(
        self,
        ak_public: bytes,
        quote: bytes,
        signature: bytes,
        *,
        nonce: bytes,
        pcrs: Pcrs,
        policy: PolicyFacts | None,
        eventlog: bytes | Callable[[], bytes | None] | None,
        eventlog_sha256: str | None,
        judged: tuple[str, str, list[str]] | None,
    ) -> Appraised: ...

    def signed_by(self, ak_public: bytes, quote: bytes, signature: bytes) -> bool: ...

    def check_policy(self, name: str, document: str) -> PolicyFacts: ...

    def evaluate(self, policy: PolicyFacts, evidence: CheckedEvidence) -> Outcome: ...

    def capture(self, name: str, eventlog: bytes | None, pcrs: Pcrs) -> PolicyFacts: ...


class AttestVerifier:
    """The real verifier: :mod:`hostseal.attest`, imported when first used."""

    def __init__(self, trust_store: Path) -> None:
        self._trust_dir = trust_store
        self._store: Any = None
        self._policies: dict[str, Any] = {}

    def ak_name(self, ak_public: bytes) -> bytes:
        from hostseal.attest import load_ak_public

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
        from hostseal.attest import make_credential

        return make_credential(ek_public, ak_name, secret)

    def _trust_store(self) -> Any:
        from hostseal.attest import TrustStore

        if self._store is None:
            self._store = TrustStore.default(self._trust_dir)
        return self._store

    def ek_certificate_trusted(self, certificate: bytes, ek_public: bytes, at: datetime) -> bool:
        """True when the certificate chains to the trust store; False when it does not (or the
        store is empty); raises when it is unreadable or certifies another key."""
        from hostseal.attest import EkCertificateUntrusted, verify_ek_certificate

        try:
            verify_ek_certificate(certificate, self._trust_store(), ek_public=ek_public, at=at)
        except EkCertificateUntrusted:
            return False
        return True

    def ek_vendor(self, certificate: bytes, ek_public: bytes, at: datetime) -> str | None:
        """The TPM vendor a trusted EK certificate names (``"Intel (INTC)"``), else None: an
        untrusted certificate's vendor attribute is not shown, as nobody vouches for it."""
        from hostseal.attest import EkCertificateUntrusted, verify_ek_certificate

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
        eventlog: bytes | Callable[[], bytes | None] | None,
        eventlog_sha256: str | None,
        judged: tuple[str, str, list[str]] | None,
    ) -> Appraised:
        """Verify the quote and judge it by ``policy`` (:func:`hostseal.attest.appraise`),
        reusing ``judged`` = (appraisal key, status, messages) of the host's last full
        appraisal when the evidence is of the same boot, log and policy. Without a policy the
        quote and log are verified and the outcome is left to the caller (status "Warning")."""
        from hostseal.attest.appraise import EventLogUnavailable, Judged, appraise

        ak = _load_ak(ak_public)
        if policy is None:
            log = eventlog() if callable(eventlog) else eventlog
            result = verify_quote_checked(ak, quote, signature, nonce, pcrs, log)
            digest = hashlib.sha256(log).hexdigest() if log is not None else None
            return Appraised(Outcome("Warning", []), None, False, result, digest)
        try:
            appraisal = appraise(
                ak,
                quote,
                signature,
                nonce=nonce,
                pcrs=pcrs,
                policy=self._policy(policy),
                policy_sha256=policy.digest,
                eventlog=eventlog,
                eventlog_sha256=eventlog_sha256,
                judged=Judged(judged[0], judged[1], tuple(judged[2])) if judged else None,
            )
        except EventLogUnavailable as exc:
            raise EventLogUnknown(exc.message, exc.remedy) from exc
        verdict = appraisal.verdict
        findings = [_finding(f) for f in getattr(verdict, "findings", [])] if verdict else []
        return Appraised(
            Outcome(appraisal.status, list(appraisal.messages), findings),
            appraisal.key,
            appraisal.reused,
            {bank: dict(values) for bank, values in appraisal.pcrs.items()},
            appraisal.eventlog_sha256,
        )

    def _policy(self, facts: PolicyFacts) -> Any:
        """The parsed policy, kept by digest (policies are few and change rarely)."""
        policy = self._policies.get(facts.digest)
        if policy is None:
            from hostseal.attest import ReferencePolicy

            if len(self._policies) >= 256:
                self._policies.clear()
            policy = self._policies[facts.digest] = ReferencePolicy.from_json(facts.document)
        return policy

    def signed_by(self, ak_public: bytes, quote: bytes, signature: bytes) -> bool:
        """True when ``signature`` over ``quote`` verifies with ``ak_public``."""
        from hostseal.attest import verify_quote

        try:  # a nonce no quote has: the signature is checked first, then the nonce fails
            verify_quote(_load_ak(ak_public), quote, signature, nonce=b"\0" * 65, pcrs={})
        except HostsealError as exc:
            checks = exc.details.get("checks")
            return isinstance(checks, dict) and checks.get("signature") == "passed"
        return True

    def check_policy(self, name: str, document: str) -> PolicyFacts:
        from hostseal.attest import PolicyInvalid, ReferencePolicy

        try:
            policy = ReferencePolicy.from_json(document)
        except PolicyInvalid as exc:
            raise PolicyRefused(exc.message, exc.remedy, exc.details) from exc
        return PolicyFacts(name, policy.quote_bank, tuple(policy.quote_pcrs), policy.to_json())

    def evaluate(self, policy: PolicyFacts, evidence: CheckedEvidence) -> Outcome:
        from hostseal.attest import evaluate

        verdict = evaluate(self._policy(policy), evidence.pcrs, evidence.parsed)
        findings = [_finding(f) for f in getattr(verdict, "findings", [])]
        return Outcome(str(verdict.status), list(verdict.messages), findings)

    def capture(self, name: str, eventlog: bytes | None, pcrs: Pcrs) -> PolicyFacts:
        from hostseal.attest import PolicyInvalid, capture_policy
        from hostseal.measure import parse_event_log

        parsed = parse_event_log(eventlog) if eventlog else None
        try:
            policy = capture_policy(name, parsed, pcrs)
        except PolicyInvalid as exc:
            raise PolicyRefused(exc.message, exc.remedy, exc.details) from exc
        return PolicyFacts(name, policy.quote_bank, tuple(policy.quote_pcrs), policy.to_json())


@functools.lru_cache(maxsize=65536)
def _load_ak(ak_public: bytes) -> Any:
    """A host's parsed AK, kept (an EC point or RSA modulus costs tens of µs to load); bounded,
    a few KB per host."""
    from hostseal.attest import load_ak_public

    return load_ak_public(ak_public)


def verify_quote_checked(
    ak: Any, quote: bytes, signature: bytes, nonce: bytes, pcrs: Pcrs, eventlog: bytes | None
) -> dict[str, dict[int, bytes]]:
    """:func:`hostseal.attest.verify_quote`; the verified PCR values."""
    from hostseal.attest import verify_quote

    result = verify_quote(ak, quote, signature, nonce=nonce, pcrs=pcrs, eventlog=eventlog)
    return {bank: dict(values) for bank, values in result.pcrs.items()}


def _finding(finding: object) -> dict[str, Any]:
    to_dict = getattr(finding, "to_dict", None)
    if callable(to_dict):
        data = to_dict()
        if isinstance(data, dict):
            return data
    return {"text": str(finding)}


def is_evidence_error(exc: BaseException) -> bool:
    """True for the refusals of evidence verification (bad quote, signature, log...)."""
    return isinstance(exc, HostsealError)
