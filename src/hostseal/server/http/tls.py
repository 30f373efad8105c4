"""TLS material for ``hostseal server run``: on by default, generated at first start.

Under ``<data dir>/tls/``: ``ca.pem`` + ``ca.key`` (ECDSA P-256, 10 years) and ``server.pem`` +
``server.key`` (ECDSA P-256, 1 year, issued by that CA) for ``localhost``, ``127.0.0.1``, ``::1``,
the machine's host name, the bind address and every extra name of ``tls_names``. Keys are
mode 0600. The server certificate is issued again at start when a name is missing or fewer than
30 days are left. Clients trust ``ca.pem`` (``hostseal server ca-cert`` prints its path).

Bring your own: set ``tls_cert`` and ``tls_key`` (and ``tls_ca`` for what ``ca-cert`` prints);
then nothing is generated.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostseal import pki
from hostseal.client.defaults import CA_FILE
from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write
from hostseal.server.settings import ServerSettings

RENEW_BEFORE = timedelta(days=30)


class TlsSetupFailed(HostsealError):
    """The server's certificate or key cannot be used."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None


def server_names(settings: ServerSettings) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    host, _ = settings.bind_address
    if host not in ("0.0.0.0", "::"):  # noqa: S104 -- comparing, not binding
        names.append(host)
    names.extend(settings.tls_names)
    return list(dict.fromkeys(n for n in names if n))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_ca(tls_dir: Path, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hostseal"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"hostseal server CA {socket.gethostname()}"),
        ]
    )
    cert = pki.self_signed_ca(
        key, name, now=now, lifetime=timedelta(days=3650), hash_algorithm=hashes.SHA256()
    )
    atomic_write(tls_dir / "ca.key", _key_pem(key), mode=0o600)
    atomic_write(tls_dir / CA_FILE, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert, key


def _load_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((tls_dir / CA_FILE).read_bytes())
    key = serialization.load_pem_private_key((tls_dir / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsSetupFailed(
            f"{tls_dir / 'ca.key'} is not an ECDSA key.",
            f"Remove {tls_dir} to have a new CA generated, or bring your own certificate.",
        )
    return cert, key


def _needs_new(path: Path, names: list[str], now: datetime) -> bool:
    if not path.is_file():
        return True
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return True
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return not set(names) <= have


def _issue_server(tls_dir: Path, names: list[str], now: datetime) -> None:
    ca_cert, ca_key = _load_ca(tls_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    atomic_write(tls_dir / "server.key", _key_pem(key), mode=0o600)
    atomic_write(tls_dir / "server.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def ensure_tls(settings: ServerSettings, now: datetime | None = None) -> TlsFiles:
    """The certificate, key and CA the server uses; generated or renewed when needed."""
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise TlsSetupFailed(
                "Only one of the TLS certificate and key was given.",
                "Set both HOSTSEAL_SERVER_TLS_CERT and HOSTSEAL_SERVER_TLS_KEY, or neither.",
            )
        for path in (settings.tls_cert, settings.tls_key):
            if not path.is_file():
                raise TlsSetupFailed(f"{path} does not exist.", "Give the right path.")
        return TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_ca)
    now = now or datetime.now(UTC)
    tls_dir = settings.tls_dir
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = server_names(settings)
    with _locked(tls_dir / ".lock"):  # two processes must not make two CAs
        if not (tls_dir / CA_FILE).is_file() or not (tls_dir / "ca.key").is_file():
            _create_ca(tls_dir, now)
            (tls_dir / "server.pem").unlink(missing_ok=True)
        if _needs_new(tls_dir / "server.pem", names, now):
            _issue_server(tls_dir, names, now)
    return TlsFiles(tls_dir / "server.pem", tls_dir / "server.key", tls_dir / CA_FILE)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
