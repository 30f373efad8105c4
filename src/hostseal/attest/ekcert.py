"""EK certificates: is this TPM a genuine TPM from a vendor the operator trusts?

A TPM vendor certifies each TPM's endorsement key (EK) when it makes the chip; the certificate
sits in the TPM's NV memory (``tpm2_getekcertificate``). :func:`verify_ek_certificate` checks it
against a :class:`TrustStore` of vendor CA certificates::

    store = TrustStore.from_bytes([vendor_root_pem], [vendor_intermediate_der])
    ek = verify_ek_certificate(cert_der, store, ek_public=ek_tpm2b_public)
    ek.vendor, ek.model, ek.chain       # "INTC", "SPT", ("C=US, ..., CN=www.intel.com", ...)

Checked: the certificate can be read; every signature up the chain verifies with its issuer's
key, ending at one of the store's trust anchors; every certificate is valid at ``at``; issuers
are CAs; no critical extension hostseal does not understand; and, given ``ek_public``, the
certificate's key is the EK's. Vendor certificates that break DER (Nuvoton, Intel PTT) or carry
NV padding are read anyway, their signatures checked over the bytes as signed
(:mod:`hostseal.attest._x509`); :attr:`EkCertificate.quirks` lists the departures.
:func:`read_ek_certificate` reads what a certificate says (vendor, model) without verifying it,
for display: it is hostseal's one EK-certificate reader.

Trust store: certificate bytes (PEM with any number of certificates, or one DER certificate),
each a trust anchor or an intermediate that only helps build chains -- a chain may end at any
anchor, root or not, as with keylime's ``tpm_cert_store``. Nothing here reads files: the caller
loads them (:mod:`hostseal.truststore` reads a directory, where certificates under an
``intermediates`` sub-directory are intermediates). hostseal ships no vendor certificates: the
default store (:data:`DEFAULT_TPM_CA_DIR`) starts empty and verifying against it fails, saying
where to get vendor CA bundles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hostseal import tcg
from hostseal.attest._der import DerError
from hostseal.attest._tpmpublic import ek_public_key, parse_ek_public
from hostseal.attest._x509 import (
    KNOWN_CRITICAL,
    Certificate,
    UnsupportedSignature,
    parse_certificate,
    split_certificates,
)
from hostseal.attest.errors import (
    EkCertificateMalformed,
    EkCertificateMismatch,
    EkCertificateUntrusted,
)

__all__ = [
    "DEFAULT_TPM_CA_DIR",
    "EkCertificate",
    "StoreSource",
    "TrustStore",
    "read_ek_certificate",
    "verify_ek_certificate",
]

DEFAULT_TPM_CA_DIR = Path("/etc/hostseal/tpm-ca")
MAX_CHAIN = 8

TCG_AT_TPM_MANUFACTURER = "2.23.133.2.1"
TCG_AT_TPM_MODEL = "2.23.133.2.2"
TCG_AT_TPM_VERSION = "2.23.133.2.3"

STORE_REMEDY = (
    "Put the TPM vendors' CA certificates (PEM or DER; roots, and intermediates in an "
    "'intermediates' sub-directory) into the trust store directory ({where}). Vendors publish "
    "them (Infineon, STMicroelectronics, Nuvoton, Intel, AMD); the tpm-ca-certificates bundle "
    "(https://github.com/loicsikidi/tpm-ca-certificates) collects them."
)
UNTRUSTED_REMEDY = (
    "Do not enrol this host until its TPM is explained: read the EK certificate again from the "
    "TPM (tpm2_getekcertificate). If the TPM is genuine, add its vendor's CA certificates to "
    "the trust store ({where})."
)


@dataclass(frozen=True)
class EkCertificate:
    """An EK certificate: who made the TPM, and the chain that vouches for it.

    ``vendor`` is the TCG vendor ID from the TPM manufacturer attribute (``"INTC"`` for
    ``id:494E5443``) and ``vendor_name`` its company (``"Intel"``, from :mod:`hostseal.tcg`);
    both are None when the certificate has no such attribute. From
    :func:`verify_ek_certificate`, ``chain`` lists the issuers' subjects from the EK's issuer to
    the trust anchor; from :func:`read_ek_certificate` nothing vouches for the certificate and
    ``chain`` is empty.
    """

    der: bytes
    subject: str
    issuer: str
    serial_number: int
    not_before: datetime
    not_after: datetime
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    chain: tuple[str, ...]
    manufacturer_id: str | None = None
    vendor: str | None = None
    vendor_name: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    quirks: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, hex."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def tpm_kind(self) -> str | None:
        """``"discrete"``, ``"firmware"`` or ``"virtual"`` from the vendor
        (:func:`hostseal.tcg.tpm_kind`); None without a vendor."""
        return tcg.tpm_kind(self.vendor) if self.vendor else None

    def to_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial_number": f"{self.serial_number:x}",
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint_sha256": self.fingerprint,
            "manufacturer_id": self.manufacturer_id,
            "vendor": self.vendor,
            "vendor_name": self.vendor_name,
            "model": self.model,
            "firmware_version": self.firmware_version,
            "chain": list(self.chain),
            "quirks": list(self.quirks),
        }


@dataclass(frozen=True)
class StoreSource:
    """The bytes of one trust-store file (PEM with any number of certificates, or one DER
    certificate), named by where they came from; an anchor, or an intermediate that only helps
    build chains."""

    name: str
    data: bytes
    anchor: bool = True


@dataclass(frozen=True)
class TrustStore:
    """TPM vendor CA certificates: trust anchors, and intermediates that help build chains.

    ``problems`` names the certificates that could not be read (they are left out);
    ``location`` says where the store came from, for messages.
    """

    anchors: tuple[Certificate, ...] = ()
    intermediates: tuple[Certificate, ...] = ()
    problems: tuple[str, ...] = ()
    location: str = "no location given"
    _by_subject: dict[object, list[tuple[Certificate, bool]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for certs, anchor in ((self.anchors, True), (self.intermediates, False)):
            for cert in certs:
                self._by_subject.setdefault(cert.subject.key, []).append((cert, anchor))

    def __len__(self) -> int:
        return len(self.anchors) + len(self.intermediates)

    @property
    def empty(self) -> bool:
        return not self.anchors

    @classmethod
    def from_bytes(
        cls,
        anchors: Iterable[bytes],
        intermediates: Iterable[bytes] = (),
        *,
        location: str = "given in memory",
    ) -> TrustStore:
        """A store from certificate bytes (each item PEM with any number of certificates, or
        one DER certificate)."""
        return cls.from_sources(
            [
                *(StoreSource(f"anchor {i + 1}", data) for i, data in enumerate(anchors)),
                *(
                    StoreSource(f"intermediate {i + 1}", data, anchor=False)
                    for i, data in enumerate(intermediates)
                ),
            ],
            location=location,
        )

    @classmethod
    def from_sources(
        cls, sources: Iterable[StoreSource], *, problems: Iterable[str] = (), location: str
    ) -> TrustStore:
        """A store from certificate bytes named by where they came from (a file's path), in
        order. ``problems`` are the caller's own (a file it could not read); they come first in
        :attr:`problems`, then each source that holds no readable certificate."""
        found = list(problems)
        anchors: list[Certificate] = []
        helpers: list[Certificate] = []
        for source in sources:
            target = anchors if source.anchor else helpers
            target.extend(_load(source.data, source.name, found))
        return cls(tuple(anchors), tuple(helpers), tuple(found), location)

    def issuers_of(self, cert: Certificate) -> Iterator[tuple[Certificate, bool]]:
        """Certificates whose subject is ``cert``'s issuer (anchors first), with whether each
        is an anchor; a key identifier that disagrees rules a candidate out."""
        candidates = sorted(self._by_subject.get(cert.issuer.key, []), key=lambda c: not c[1])
        for candidate, anchor in candidates:
            if (
                cert.authority_key_id is not None
                and candidate.subject_key_id is not None
                and cert.authority_key_id != candidate.subject_key_id
            ):
                continue
            yield candidate, anchor

    def is_anchor(self, cert: Certificate) -> bool:
        return any(a.der == cert.der for a in self.anchors)


def _load(blob: bytes, source: str, problems: list[str]) -> list[Certificate]:
    certs: list[Certificate] = []
    try:
        items = split_certificates(blob)
    except DerError as err:
        problems.append(f"{source}: {err}")
        return certs
    if not items:
        problems.append(f"{source}: no certificate found (no CERTIFICATE block in the PEM text)")
    for index, der in enumerate(items):
        try:
            certs.append(parse_certificate(der))
        except DerError as err:
            where = source if len(items) == 1 else f"{source} (certificate {index + 1})"
            problems.append(f"{where}: not a readable certificate: {err}")
    return certs


# --- verification ----------------------------------------------------------------------------


@dataclass
class _Failure:
    reason: str
    message: str


def _untrusted(store: TrustStore, failure: _Failure) -> EkCertificateUntrusted:
    return EkCertificateUntrusted(
        failure.message, UNTRUSTED_REMEDY.format(where=store.location), reason=failure.reason
    )


def _validity_failure(cert: Certificate, at: datetime, what: str) -> _Failure | None:
    if at < cert.not_before:
        return _Failure(
            "not_yet_valid",
            f"{what} is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC "
            f"(checked at {at:%Y-%m-%d %H:%M} UTC).",
        )
    if at > cert.not_after:
        return _Failure(
            "expired",
            f"{what} expired on {cert.not_after:%Y-%m-%d %H:%M} UTC "
            f"(checked at {at:%Y-%m-%d %H:%M} UTC).",
        )
    return None


def _critical_failure(cert: Certificate, what: str) -> _Failure | None:
    unknown = sorted(
        oid
        for oid, (critical, _) in cert.extensions.items()
        if critical and oid not in KNOWN_CRITICAL
    )
    if unknown:
        return _Failure(
            "unsupported_critical_extension",
            f"{what} has a critical extension hostseal does not process ({', '.join(unknown)}), "
            "so it cannot be accepted.",
        )
    return None


def _chain(
    cert: Certificate, store: TrustStore, at: datetime, path: list[Certificate]
) -> list[Certificate] | _Failure:
    """The issuers from ``cert`` up to an anchor, or the most telling reason there are none."""
    label = "The EK certificate" if len(path) == 1 else f"The CA certificate '{cert.subject}'"
    failure: _Failure | None = None
    found_any = False
    for issuer, anchor in store.issuers_of(cert):
        if any(issuer.der == seen.der for seen in path) or len(path) > MAX_CHAIN:
            continue
        found_any = True
        what = f"The CA certificate '{issuer.subject}'"
        try:
            signed = cert.verify_signed_by(issuer)
        except (UnsupportedSignature, DerError) as err:
            failure = _Failure(
                "unsupported_signature_algorithm",
                f"{label} cannot be checked against its issuer '{issuer.subject}': {err}.",
            )
            continue
        if not signed:
            failure = failure or _Failure(
                "bad_signature",
                f"{label}'s signature does not verify with the key of its issuer "
                f"'{issuer.subject}' in the trust store: the certificate was altered or forged.",
            )
            continue
        problem = (
            _validity_failure(issuer, at, what)
            or _critical_failure(issuer, what)
            or (
                None
                if issuer.may_sign_certificates
                else _Failure(
                    "not_a_ca",
                    f"{what} is not a CA allowed to sign certificates (basicConstraints / "
                    "keyUsage), yet it is the issuer found.",
                )
            )
        )
        if problem is not None:
            failure = problem
            continue
        if anchor:
            return [issuer]
        rest = _chain(issuer, store, at, [*path, issuer])
        if isinstance(rest, list):
            return [issuer, *rest]
        failure = rest
    if failure is not None:
        return failure
    if found_any:  # every candidate is already on the path: a loop without an anchor
        return _Failure("no_issuer", f"{label}'s chain loops without reaching a trust anchor.")
    count = f"{len(store)} certificate" + ("" if len(store) == 1 else "s")
    unread = f", {len(store.problems)} unreadable" if store.problems else ""
    return _Failure(
        "no_issuer",
        f"{label} was issued by '{cert.issuer}', which is not in the TPM CA trust store "
        f"({count}{unread}).",
    )


def _key_text(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        modulus = key.public_numbers().n.to_bytes((key.key_size + 7) // 8, "big")
        return f"RSA {key.key_size} modulus {modulus[:8].hex()}..."
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECC {key.curve.name} x {key.public_numbers().x:x}"[:40] + "..."
    return type(key).__name__


def _same_key(a: object, b: object) -> bool:
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if isinstance(a, ec.EllipticCurvePublicKey) and isinstance(b, ec.EllipticCurvePublicKey):
        na, nb = a.public_numbers(), b.public_numbers()
        return (na.x, na.y, na.curve.name) == (nb.x, nb.y, nb.curve.name)
    return False


def read_ek_certificate(cert: bytes) -> EkCertificate:
    """What an EK certificate (DER or PEM, NV padding allowed) says -- vendor, model, key --
    without verifying it: nothing vouches for what it says, and ``chain`` is empty.

    Reads every certificate :func:`verify_ek_certificate` reads, DER quirks included. Raises
    :class:`EkCertificateMalformed` when it cannot be read.
    """
    leaf, key = _read(cert)
    return _ek_certificate(leaf, key, [])


def _read(cert: bytes) -> tuple[Certificate, rsa.RSAPublicKey | ec.EllipticCurvePublicKey]:
    try:
        items = split_certificates(bytes(cert))
        if len(items) != 1:
            raise DerError(f"expected one certificate, found {len(items)}")
        leaf = parse_certificate(items[0])
        key = leaf.public_key()
    except DerError as err:
        raise EkCertificateMalformed(
            f"The EK certificate cannot be read: {err}.",
            "Read it again from the TPM (tpm2_getekcertificate writes DER; the RSA and ECC EK "
            "certificates are at NV indices 0x01c00002 and 0x01c0000a) and send it unchanged.",
        ) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise EkCertificateMalformed(
            f"The EK certificate certifies a {type(key).__name__}; an EK is an RSA or ECC key.",
            "Send the certificate of the TPM's RSA or ECC endorsement key.",
        )
    return leaf, key


def _ek_certificate(
    leaf: Certificate,
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    chain: list[Certificate],
) -> EkCertificate:
    attributes = dict(leaf.san_attributes)
    manufacturer = attributes.get(TCG_AT_TPM_MANUFACTURER)
    vendor = tcg.vendor_id_from_attribute(manufacturer) if manufacturer is not None else None
    return EkCertificate(
        der=leaf.der,
        subject=str(leaf.subject),
        issuer=str(leaf.issuer),
        serial_number=leaf.serial_number,
        not_before=leaf.not_before,
        not_after=leaf.not_after,
        public_key=key,
        chain=tuple(str(c.subject) for c in chain),
        manufacturer_id=manufacturer,
        vendor=vendor,
        vendor_name=tcg.vendor_name(vendor) if vendor else None,
        model=attributes.get(TCG_AT_TPM_MODEL),
        firmware_version=attributes.get(TCG_AT_TPM_VERSION),
        quirks=leaf.quirks,
    )


def verify_ek_certificate(
    cert: bytes,
    store: TrustStore,
    *,
    ek_public: bytes | None = None,
    at: datetime | None = None,
) -> EkCertificate:
    """Verify an EK certificate (DER or PEM, NV padding allowed) against ``store``.

    ``ek_public`` is the EK's TPM2B_PUBLIC / TPMT_PUBLIC: when given, the certificate must
    certify that key. ``at`` (default: now) is the time the chain must be valid at.

    Raises :class:`EkCertificateMalformed` (cannot be read), :class:`EkCertificateUntrusted`
    (no chain to an anchor, a bad signature, not valid at ``at``, an empty store; ``reason``
    says which) or :class:`EkCertificateMismatch` (it certifies another key).
    """
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("'at' must be timezone-aware (for example datetime.now(UTC))")
    leaf, key = _read(cert)
    if store.empty:
        raise EkCertificateUntrusted(
            "No TPM vendor CA certificates are configured (the trust store "
            f"{store.location} has no trust anchors), so no EK certificate can be verified.",
            STORE_REMEDY.format(where=store.location),
            reason="empty_store",
        )
    failure = _validity_failure(leaf, at, "The EK certificate") or _critical_failure(
        leaf, "The EK certificate"
    )
    if failure is not None:
        raise _untrusted(store, failure)
    chain = [] if store.is_anchor(leaf) else _chain(leaf, store, at, [leaf])
    if isinstance(chain, _Failure):
        raise _untrusted(store, chain)
    if ek_public is not None:
        ek_key = ek_public_key(parse_ek_public(ek_public))
        if not _same_key(key, ek_key):
            raise EkCertificateMismatch(
                "The EK certificate certifies another key than the host's EK "
                f"(certificate: {_key_text(key)}; EK: {_key_text(ek_key)}).",
                "The certificate does not belong to this TPM's EK: send the EK of the "
                "certificate's algorithm (the RSA EK with the RSA certificate, the ECC EK with "
                "the ECC one), read both again from the TPM, and if they still differ do not "
                "enrol the host.",
            )
    return _ek_certificate(leaf, key, chain)
