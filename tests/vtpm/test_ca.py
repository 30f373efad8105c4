"""Using your own CA: an intermediate of your PKI issues the vTPMs' EK certificates."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hostseal import vtpm
from hostseal.attest import EkCertificateUntrusted
from hostseal.keyprovider import ProviderStore
from hostseal.vtpm import VtpmDirs
from hostseal.vtpm import ca as vtpm_ca

from .conftest import verify_vtpm_ek

pytestmark = pytest.mark.swtpm


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None = None,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    ca: bool = True,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(issuer_key or key, hashes.SHA256())
    )


def _pem(obj: x509.Certificate | rsa.RSAPrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_own_intermediate_ca(dirs: VtpmDirs, providers: ProviderStore) -> None:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("Example Corp Root CA", root_key)
    issuing_key = rsa.generate_private_key(65537, 2048)
    issuing = _cert("Example Corp vTPM CA", issuing_key, root.subject, root_key)

    provider = providers.open()
    info = vtpm_ca.import_ca(dirs.ca, provider, _pem(issuing), _pem(issuing_key), _pem(root))
    assert info.subject == "CN=Example Corp vTPM CA" and info.chain_length == 2
    assert _pem(issuing_key) not in (dirs.ca / "key.json").read_bytes()

    record = vtpm.create(dirs, providers, "vm1")
    der = record.ek_certificate("rsa")
    assert der is not None
    ek = verify_vtpm_ek(der, dirs.ca)
    assert ek.issuer == "CN=Example Corp vTPM CA"
    assert ek.chain == ("CN=Example Corp vTPM CA", "CN=Example Corp Root CA")
    issuing.verify_directly_issued_by(root)

    other_root_key = ec.generate_private_key(ec.SECP384R1())
    stranger = _cert("Stranger", other_root_key)
    (dirs.ca / "chain.pem").write_bytes(_pem(stranger))
    with pytest.raises(EkCertificateUntrusted):
        verify_vtpm_ek(der, dirs.ca)


def test_import_refuses_what_cannot_be_a_ca(dirs: VtpmDirs, providers: ProviderStore) -> None:
    provider = providers.open()
    key = rsa.generate_private_key(65537, 2048)
    other = rsa.generate_private_key(65537, 2048)
    with pytest.raises(vtpm.CaError, match="does not belong to the CA certificate"):
        vtpm_ca.import_ca(dirs.ca, provider, _pem(_cert("A", key)), _pem(other))
    with pytest.raises(vtpm.CaError, match="is not a CA certificate"):
        vtpm_ca.import_ca(dirs.ca, provider, _pem(_cert("B", key, ca=False)), _pem(key))
    with pytest.raises(vtpm.CaError, match="could not be read"):
        vtpm_ca.import_ca(dirs.ca, provider, b"not pem", _pem(key))
    assert not vtpm_ca.exists(dirs.ca)
    with pytest.raises(vtpm.CaError) as missing:
        vtpm_ca.info(dirs.ca)
    assert "hostseal vtpm ca import --cert CERT --key KEY" in missing.value.remedy
