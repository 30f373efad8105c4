"""EK certificates checked against the trust store: a trusted chain enrols without approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hostseal.attest import DEFAULT_TPM_CA_DIR
from hostseal.server.clock import FixedClock
from hostseal.server.settings import DEFAULT_TRUST_STORE, ServerSettings

from ._softtpm import SoftTpm
from .conftest import make_server


def _vendor_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lab TPM Vendor EK CA")])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650 * 2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True)
    (directory / "vendor.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _ek_certificate(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, ek: ec.EllipticCurvePrivateKey
) -> bytes:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.subject)
        .public_key(ek.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650 * 2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_default_trust_store_is_hostseals() -> None:
    assert DEFAULT_TRUST_STORE == DEFAULT_TPM_CA_DIR


def test_trusted_ek_certificate_enrols_directly_even_under_require_chain(
    tmp_path: Path, clock: FixedClock
) -> None:
    store = tmp_path / "tpm-ca"
    ca, ca_key = _vendor_ca(store)
    settings = ServerSettings(data_dir=tmp_path / "s", ek_policy="require-chain", trust_store=store)
    server = make_server(settings, clock)
    try:
        tpm = SoftTpm()
        certificate = _ek_certificate(ca, ca_key, tpm.ek)
        started = server.enrol_start("trusted", tpm, certificate)
        assert started.status_code == 200, started.text

        data = server.enrol("trusted", tpm, certificate=certificate)
        assert data["status"] == "enrolled"
        host = server.host("trusted")
        assert host["ek"]["certificate"] is True
        assert host["ek"]["trusted_chain"] is True

        # a certificate of another key is refused, whatever the policy
        other = SoftTpm()
        mismatch = server.enrol_start("other", other, certificate)
        assert mismatch.status_code == 422
        assert mismatch.json()["error"] == "EkCertificateMismatch"

        # a certificate from an unknown CA: not trusted, refused under require-chain
        rogue_ca, rogue_key = _vendor_ca(tmp_path / "rogue")
        rogue = server.enrol_start("rogue", other, _ek_certificate(rogue_ca, rogue_key, other.ek))
        assert rogue.status_code == 403
        assert "does not chain to a TPM vendor CA" in rogue.json()["message"]
    finally:
        server.ctx.close()
