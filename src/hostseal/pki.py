"""Certificate authorities hostseal creates for itself: one recipe for a self-signed CA.

Used by the service's TLS CA (:mod:`hostseal.server.http.tls`) and the vTPM CA
(:mod:`hostseal.vtpm.ca`). The CA may sign certificates and CRLs only (keyUsage
keyCertSign + cRLSign, critical) and only end-entity certificates (basicConstraints cA with
pathLenConstraint 0, critical); its validity starts five minutes early, for clocks that lag.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CLOCK_SKEW = timedelta(minutes=5)


def self_signed_ca(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    name: x509.Name,
    *,
    now: datetime,
    lifetime: timedelta,
    hash_algorithm: hashes.SHA256 | hashes.SHA384,
) -> x509.Certificate:
    """A CA certificate for ``key`` named ``name``, valid from ``now`` for ``lifetime``."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hash_algorithm)
    )
