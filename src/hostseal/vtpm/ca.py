"""hostseal's vTPM CA: it issues every vTPM's EK certificates and platform certificate.

The CA lives in ``<vTPM directory>/ca/`` (mode 0700):

* ``ca.pem``     -- the issuing certificate (self-signed by default; yours when imported);
* ``chain.pem``  -- optional: the certificates above it, up to a root (imported CAs);
* ``key.json``   -- the private key (PKCS#8), encrypted with AES-256-GCM under a data key from a
  key provider; the file holds the key record (provider, key id), never the key in clear;
* ``certserial`` -- the serial number counter of ``swtpm_localca``.

Certificates are made by ``swtpm_localca`` (swtpm's own certificate tool, run by
``swtpm_setup``), configured to sign with this CA. The decrypted signing key is handed to it as
``/proc/<pid>/fd/<n>`` of an in-memory file (``memfd``) of the hostseal process: it is readable
only by processes of the same user while ``vtpm create`` runs, and never written to a disk.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hostseal import pki
from hostseal.fsutil import atomic_write
from hostseal.keyprovider import _crypto
from hostseal.keyprovider.base import KeyProvider
from hostseal.keyprovider.store import ProviderStore
from hostseal.vtpm.errors import CaError
from hostseal.vtpm.swtpm import require

SUBJECT = "hostseal vTPM CA"
KEY_FORMAT = "hostseal-vtpm-ca-key"
PLATFORM_OPTIONS = (
    "--platform-manufacturer hostseal\n--platform-version 1.0\n--platform-model hostseal-vtpm\n"
)


@dataclass(frozen=True)
class CaInfo:
    subject: str
    fingerprint: str  # SHA-256 of the certificate (DER), hex
    not_after: str
    key_provider: str
    key_id: str
    chain_length: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _aad(fingerprint: str) -> bytes:
    return f"hostseal vtpm ca key v1|{fingerprint}".encode()


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def exists(ca_dir: Path) -> bool:
    return (ca_dir / "ca.pem").is_file() and (ca_dir / "key.json").is_file()


def create(ca_dir: Path, provider: KeyProvider, subject: str = SUBJECT, years: int = 20) -> CaInfo:
    """A new self-signed CA (ECDSA P-384) whose key is encrypted under ``provider``."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    cert = pki.self_signed_ca(
        key,
        name,
        now=now,
        lifetime=datetime.timedelta(days=365 * years),
        hash_algorithm=hashes.SHA384(),
    )
    return _store(ca_dir, provider, cert, key, [])


def import_ca(
    ca_dir: Path,
    provider: KeyProvider,
    cert_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes = b"",
    key_password: bytes | None = None,
) -> CaInfo:
    """Use your own CA (or an intermediate of it): its certificate, its private key (RSA or
    ECDSA, PEM) and optionally the certificates above it."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=key_password)
        chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem.strip() else []
    except (ValueError, TypeError) as err:
        raise CaError(
            f"The CA certificate, key or chain could not be read ({err}).",
            "Give PEM files: the issuing certificate, its private key (with --key-password-file "
            "if it is encrypted), and optionally the chain above it.",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CaError("The CA key must be an RSA or ECDSA key.", "Use an RSA or ECDSA CA.")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise CaError(
            "The private key does not belong to the CA certificate.",
            "Give the key that matches the certificate.",
        )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CaError(
            f"The certificate {cert.subject.rfc4514_string()} is not a CA certificate "
            "(basicConstraints cA is not set).",
            "Issue a CA (or intermediate CA) certificate for vTPMs and import that.",
        )
    _verify_chain([cert, *chain])
    return _store(ca_dir, provider, cert, key, chain)


def _store(
    ca_dir: Path,
    provider: KeyProvider,
    cert: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    chain: list[x509.Certificate],
) -> CaInfo:
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(ca_dir, 0o700)
    data_key = provider.create_key("vtpm-ca")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    print_ = fingerprint(cert)
    nonce, ciphertext = _crypto.seal(data_key.material, pem, _aad(print_))
    record = {
        "format": KEY_FORMAT,
        "version": 1,
        "certificate_sha256": print_,
        "key": provider.key_record(data_key),
        "cipher": "AES-256-GCM",
        "nonce": _crypto.b64(nonce),
        "ciphertext": _crypto.b64(ciphertext),
    }
    atomic_write(ca_dir / "key.json", json.dumps(record, indent=2).encode(), mode=0o600)
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    if chain:
        atomic_write(ca_dir / "chain.pem", chain_pem, mode=0o644)
    else:
        (ca_dir / "chain.pem").unlink(missing_ok=True)
    atomic_write(ca_dir / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return info(ca_dir)


def _missing(ca_dir: Path) -> CaError:
    return CaError(
        f"hostseal's vTPM CA is not set up (in {ca_dir}).",
        "It is created with the first vTPM (hostseal vtpm create), or explicitly: hostseal "
        "vtpm ca create, or hostseal vtpm ca import --cert CERT --key KEY to use your own.",
    )


def certificate(ca_dir: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    except FileNotFoundError:
        raise _missing(ca_dir) from None
    except (OSError, ValueError) as err:
        raise CaError(
            f"The vTPM CA certificate is unreadable ({err}).", "Import it again."
        ) from None


def chain(ca_dir: Path) -> list[x509.Certificate]:
    """The CA certificate and those above it (the root last)."""
    parents: list[x509.Certificate] = []
    with contextlib.suppress(FileNotFoundError):
        parents = x509.load_pem_x509_certificates((ca_dir / "chain.pem").read_bytes())
    return [certificate(ca_dir), *parents]


def _key_record(ca_dir: Path) -> dict[str, object]:
    try:
        record: dict[str, object] = json.loads((ca_dir / "key.json").read_text())
    except FileNotFoundError:
        raise _missing(ca_dir) from None
    except (OSError, ValueError) as err:
        raise CaError(
            f"The vTPM CA's key file is unreadable ({err}).", "Run hostseal as root."
        ) from None
    if record.get("format") != KEY_FORMAT:
        raise CaError("The vTPM CA's key file is not one hostseal wrote.", "Import the CA again.")
    return record


def info(ca_dir: Path) -> CaInfo:
    cert = certificate(ca_dir)
    key = _key_record(ca_dir)["key"]
    key_info = key if isinstance(key, dict) else {}
    return CaInfo(
        subject=cert.subject.rfc4514_string(),
        fingerprint=fingerprint(cert),
        not_after=cert.not_valid_after_utc.isoformat(),
        key_provider=str(key_info.get("provider", "")),
        key_id=str(key_info.get("key_id", "")),
        chain_length=len(chain(ca_dir)),
    )


def _signing_key_pem(ca_dir: Path, providers: ProviderStore) -> bytes:
    record = _key_record(ca_dir)
    key_record = record["key"]
    if not isinstance(key_record, dict):
        raise CaError("The vTPM CA's key file is damaged.", "Import the CA again.")
    provider = providers.open(str(key_record.get("provider")))
    data_key = provider.key_for_record(key_record)
    try:
        nonce = _crypto.unb64(record["nonce"])
        ciphertext = _crypto.unb64(record["ciphertext"])
    except (KeyError, ValueError):
        raise CaError("The vTPM CA's key file is damaged.", "Import the CA again.") from None
    pem = _crypto.open_sealed(
        data_key.material, nonce, ciphertext, _aad(fingerprint(certificate(ca_dir)))
    )
    if pem is None:
        raise CaError(
            "The vTPM CA's private key does not decrypt with its key from provider "
            f"{key_record.get('provider')!r} (or it belongs to another CA certificate).",
            "Import the CA again (hostseal vtpm ca import).",
        )
    return pem


@contextlib.contextmanager
def cert_tool_config(ca_dir: Path, providers: ProviderStore, work: Path) -> Iterator[Path]:
    """A ``swtpm_setup.conf`` in ``work`` whose certificate tool (``swtpm_localca``) signs with
    this CA; the signing key is in memory only, for as long as the context lasts."""
    pem = _signing_key_pem(ca_dir, providers)
    fd = os.memfd_create("hostseal-vtpm-ca-key", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        localca = work / "swtpm-localca.conf"
        localca.write_text(
            f"statedir = {ca_dir}\n"
            f"signingkey = /proc/{os.getpid()}/fd/{fd}\n"
            f"issuercert = {ca_dir / 'ca.pem'}\n"
            f"certserial = {ca_dir / 'certserial'}\n"
        )
        options = work / "swtpm-localca.options"
        options.write_text(PLATFORM_OPTIONS)
        setup = work / "swtpm_setup.conf"
        setup.write_text(
            f"create_certs_tool = {require('swtpm_localca')}\n"
            f"create_certs_tool_config = {localca}\n"
            f"create_certs_tool_options = {options}\n"
        )
        yield setup
    finally:
        os.close(fd)


def _verify_chain(certs: list[x509.Certificate]) -> None:
    for child, parent in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise CaError(
                f"{child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()}: the chain is broken.",
                "Give the chain in order, from the issuing CA's parent up to the root.",
            ) from None
