"""X.509 certificates read with :mod:`hostseal.attest._der`, signatures checked with
``cryptography``'s primitives over the original ``tbsCertificate`` bytes.

Why not ``cryptography.x509``: it rightly refuses certificates that break DER, and real TPM
vendor certificates do (Nuvoton's unsorted SET in names, Intel PTT EKs with an explicit
``critical FALSE``). Such departures from DER change nothing that is signed: the signature covers
the bytes as they are, and that is what is verified here. Each departure found is recorded in
:attr:`Certificate.quirks`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from hostseal.attest import _der
from hostseal.attest._der import DerError, Element

# Extensions hostseal understands well enough to accept when they are marked critical.
BASIC_CONSTRAINTS = "2.5.29.19"
KEY_USAGE = "2.5.29.15"
SUBJECT_ALT_NAME = "2.5.29.17"
SUBJECT_KEY_ID = "2.5.29.14"
AUTHORITY_KEY_ID = "2.5.29.35"
KNOWN_CRITICAL = frozenset(
    {
        BASIC_CONSTRAINTS,
        KEY_USAGE,
        SUBJECT_ALT_NAME,
        SUBJECT_KEY_ID,
        AUTHORITY_KEY_ID,
        "2.5.29.37",  # extended key usage
        "2.5.29.32",  # certificate policies (no policy constraints are processed)
        "2.5.29.9",  # subject directory attributes (TPM specification, security assertions)
        "2.5.29.31",  # CRL distribution points
        "1.3.6.1.5.5.7.1.1",  # authority information access
    }
)

_HashFactory = Callable[[], hashes.HashAlgorithm]

ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "emailAddress",
    "2.23.133.2.1": "TPMManufacturer",
    "2.23.133.2.2": "TPMModel",
    "2.23.133.2.3": "TPMVersion",
}

_RSA_PKCS1: dict[str, _HashFactory] = {
    "1.2.840.113549.1.1.5": hashes.SHA1,
    "1.2.840.113549.1.1.14": hashes.SHA224,
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
_ECDSA: dict[str, _HashFactory] = {
    "1.2.840.10045.4.1": hashes.SHA1,
    "1.2.840.10045.4.3.1": hashes.SHA224,
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}
_HASH_OIDS: dict[str, _HashFactory] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
RSA_PSS = "1.2.840.113549.1.1.10"
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
_PADDING = frozenset(b"\xff\x00 \t\r\n")


class UnsupportedSignature(Exception):
    """The certificate is signed with an algorithm hostseal does not verify."""


@dataclass(frozen=True, slots=True)
class Name:
    """A distinguished name: its RDNs as (attribute OID, text) pairs, in encoded order."""

    raw: bytes
    rdns: tuple[tuple[tuple[str, str], ...], ...]

    @property
    def key(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """For matching issuer to subject: attributes sorted within an RDN, text case-folded
        with white space collapsed (as RFC 5280, 7.1 allows)."""
        return tuple(
            tuple(sorted((o, " ".join(v.casefold().split())) for o, v in rdn)) for rdn in self.rdns
        )

    def attributes(self) -> list[tuple[str, str]]:
        return [pair for rdn in self.rdns for pair in rdn]

    def __str__(self) -> str:
        parts = ["+".join(f"{ATTRIBUTE_NAMES.get(o, o)}={v}" for o, v in rdn) for rdn in self.rdns]
        return ", ".join(parts) if parts else "(empty)"


@dataclass(frozen=True, slots=True)
class Certificate:
    """What hostseal reads from a certificate; ``der`` is the certificate without padding."""

    der: bytes
    tbs: bytes
    signature_algorithm: Element
    signature: bytes
    serial_number: int
    issuer: Name
    subject: Name
    not_before: datetime
    not_after: datetime
    spki: bytes
    extensions: dict[str, tuple[bool, bytes]]
    quirks: tuple[str, ...] = ()
    san_attributes: tuple[tuple[str, str], ...] = ()
    is_ca: bool | None = None  # None: no basicConstraints extension
    key_usage: bytes | None = None
    subject_key_id: bytes | None = None
    authority_key_id: bytes | None = None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def may_sign_certificates(self) -> bool:
        """A CA per basicConstraints, with keyCertSign if it has a keyUsage extension."""
        if not self.is_ca:
            return False
        return self.key_usage is None or bool(self.key_usage[:1] and self.key_usage[0] & 0x04)

    def public_key(self) -> PublicKeyTypes:
        try:
            return serialization.load_der_public_key(self.spki)
        except (ValueError, UnsupportedAlgorithm) as err:
            raise DerError(f"the public key cannot be read: {err}") from None

    def verify_signed_by(self, issuer: Certificate) -> bool:
        """Whether ``issuer``'s key verifies this certificate's signature over its TBS bytes.

        Raises :class:`UnsupportedSignature` for an algorithm hostseal does not verify.
        """
        key = issuer.public_key()
        algorithm = _der.oid(self.signature_algorithm.children()[0])
        try:
            pss = _pss(self.signature_algorithm) if algorithm == RSA_PSS else None
        except (ValueError, IndexError, KeyError) as err:
            raise UnsupportedSignature(
                f"RSASSA-PSS parameters hostseal cannot use ({err})"
            ) from None
        try:
            if algorithm in _RSA_PKCS1 and isinstance(key, rsa.RSAPublicKey):
                key.verify(self.signature, self.tbs, padding.PKCS1v15(), _RSA_PKCS1[algorithm]())
            elif pss is not None and isinstance(key, rsa.RSAPublicKey):
                key.verify(self.signature, self.tbs, *pss)
            elif algorithm in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(self.signature, self.tbs, ec.ECDSA(_ECDSA[algorithm]()))
            else:
                raise UnsupportedSignature(
                    f"signature algorithm {algorithm} with a {type(key).__name__} issuer key"
                )
        except InvalidSignature:
            return False
        return True


def _pss(algorithm: Element) -> tuple[padding.PSS, hashes.HashAlgorithm]:
    """RSASSA-PSS parameters (RFC 4055): hash, MGF1 hash and salt length, with defaults."""
    hash_class: _HashFactory = hashes.SHA1
    mgf_class: _HashFactory = hashes.SHA1
    salt = 20
    parts = algorithm.children()
    params = parts[1].children() if len(parts) > 1 and parts[1].tag == _der.SEQUENCE else []
    for item in params:
        inner = _der.read(item.value)
        if item.tag == 0xA0:
            hash_class = _HASH_OIDS[_der.oid(inner.children()[0])]
        elif item.tag == 0xA1:
            mgf_class = _HASH_OIDS[_der.oid(inner.children()[1].children()[0])]
        elif item.tag == 0xA2:
            salt = _der.integer(inner)
    return padding.PSS(padding.MGF1(mgf_class()), salt), hash_class()


def split_certificates(data: bytes) -> list[bytes]:
    """The certificates in PEM text (every CERTIFICATE block) or one DER certificate."""
    if b"-----BEGIN" in data:
        blocks = _PEM.findall(data)
        try:
            return [base64.b64decode(b"".join(block.split()), validate=True) for block in blocks]
        except ValueError as err:
            raise DerError(f"a PEM block is not valid base64: {err}") from None
    return [data]


def _name(element: Element) -> tuple[Name, bool]:
    """The name, and whether its multi-valued RDNs are in DER (sorted) order."""
    rdns = []
    for rdn in _der.sequence(element, "name"):
        attributes = rdn.expect(_der.SET, "relative distinguished name").children()
        pairs = []
        for attribute in attributes:
            kind, value = _der.sequence(attribute, "attribute")[:2]
            pairs.append((_der.oid(kind), _der.text(value)))
        rdns.append((tuple(pairs), _der.sorted_set_of(attributes)))
    name = Name(element.raw, tuple(pairs for pairs, _ in rdns))
    return name, all(ordered for _, ordered in rdns)


def _extensions(element: Element, quirks: list[str]) -> dict[str, tuple[bool, bytes]]:
    found: dict[str, tuple[bool, bytes]] = {}
    for extension in _der.sequence(_der.read(element.value), "extensions"):
        parts = _der.sequence(extension, "extension")
        identifier = _der.oid(parts[0])
        critical = False
        if len(parts) == 3:
            critical = _der.boolean(parts[1])
            if not critical:
                quirks.append(f"extension {identifier} encodes the default critical=FALSE")
        elif len(parts) != 2:
            raise DerError(f"extension {identifier} has {len(parts)} fields")
        if identifier in found:
            raise DerError(f"extension {identifier} appears twice")
        found[identifier] = (critical, parts[-1].expect(_der.OCTET_STRING, "extnValue").value)
    return found


def _san_attributes(value: bytes) -> tuple[tuple[str, str], ...]:
    """The attributes of every directoryName in a subjectAltName (TPM manufacturer, ...)."""
    pairs: list[tuple[str, str]] = []
    for general_name in _der.sequence(_der.read(value), "subjectAltName"):
        if general_name.tag == 0xA4:  # [4] directoryName, explicit Name
            pairs.extend(_name(_der.read(general_name.value))[0].attributes())
    return tuple(pairs)


def _basic_constraints(value: bytes) -> bool:
    parts = _der.sequence(_der.read(value), "basicConstraints")
    return bool(parts) and parts[0].tag == _der.BOOLEAN and _der.boolean(parts[0])


def _key_id(value: bytes, authority: bool) -> bytes | None:
    element = _der.read(value)
    if not authority:
        return element.expect(_der.OCTET_STRING, "subjectKeyIdentifier").value
    for part in _der.sequence(element, "authorityKeyIdentifier"):
        if part.tag == 0x80:
            return part.value
    return None


def parse_certificate(data: bytes) -> Certificate:
    """Read one DER certificate; padding after it (0xFF, 0x00, white space) is trimmed.

    Any structural surprise is a :class:`DerError`.
    """
    try:
        return _parse_certificate(bytes(data))
    except DerError:
        raise
    except (ValueError, IndexError, KeyError, OverflowError) as err:
        raise DerError(f"unexpected certificate structure ({type(err).__name__}: {err})") from None


def _parse_certificate(data: bytes) -> Certificate:
    outer = _der.read(data)
    quirks: list[str] = []
    rest = data[len(outer.raw) :]
    if rest:
        if not set(rest) <= _PADDING:
            raise DerError(f"{len(rest)} bytes of unexpected data follow the certificate")
        quirks.append(f"{len(rest)} bytes of padding after the certificate were trimmed")
    tbs_element, algorithm, signature_element = _der.sequence(outer, "certificate")
    fields = _der.sequence(tbs_element, "tbsCertificate")
    if fields and fields[0].tag == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    if len(fields) < 6:
        raise DerError("tbsCertificate has too few fields")
    serial, inner_algorithm, issuer, validity, subject, spki = fields[:6]
    _der.oid(_der.sequence(algorithm, "signatureAlgorithm")[0])
    if inner_algorithm.raw != algorithm.raw:
        raise DerError("the signature algorithm inside and outside the signed part differ")
    not_before, not_after = _der.sequence(validity, "validity")
    signature, unused = _der.bit_string(signature_element)
    if unused:
        raise DerError("the signature bit string has unused bits")
    extensions: dict[str, tuple[bool, bytes]] = {}
    for extra in fields[6:]:
        if extra.tag == 0xA3:
            extensions = _extensions(extra, quirks)
    issuer_name, issuer_sorted = _name(issuer)
    subject_name, subject_sorted = _name(subject)
    for label, ordered in (("issuer", issuer_sorted), ("subject", subject_sorted)):
        if not ordered:
            quirks.append(f"the {label} name has a multi-valued RDN in non-DER (unsorted) order")
    san = extensions.get(SUBJECT_ALT_NAME)
    basic = extensions.get(BASIC_CONSTRAINTS)
    usage = extensions.get(KEY_USAGE)
    ski = extensions.get(SUBJECT_KEY_ID)
    aki = extensions.get(AUTHORITY_KEY_ID)
    return Certificate(
        der=outer.raw,
        tbs=tbs_element.raw,
        signature_algorithm=algorithm.expect(_der.SEQUENCE, "signatureAlgorithm"),
        signature=signature,
        serial_number=_der.integer(serial),
        issuer=issuer_name,
        subject=subject_name,
        not_before=_der.time(not_before),
        not_after=_der.time(not_after),
        spki=spki.expect(_der.SEQUENCE, "subjectPublicKeyInfo").raw,
        extensions=extensions,
        quirks=tuple(quirks),
        san_attributes=_san_attributes(san[1]) if san else (),
        is_ca=_basic_constraints(basic[1]) if basic else None,
        key_usage=_der.bit_string(_der.read(usage[1]))[0] if usage else None,
        subject_key_id=_key_id(ski[1], authority=False) if ski else None,
        authority_key_id=_key_id(aki[1], authority=True) if aki else None,
    )
