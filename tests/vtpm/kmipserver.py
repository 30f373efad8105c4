"""A real PyKMIP server for tests: certificates made here, mutual TLS, SQLite in a temp dir."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class KmipServer:
    host: str
    port: int
    server_ca: Path  # what clients trust
    client: Pki  # a client the server trusts
    rogue: Pki  # a client from a CA the server does not trust
    log: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(directory: Path, cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _leaf(
    directory: Path,
    cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path],
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName] | None = None,
) -> Pki:
    ca_cert, ca_key, ca_path = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    (directory / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = directory / f"{cn}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Pki(ca_path, directory / f"{cn}.crt", key_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running_kmip_server(directory: Path) -> Iterator[KmipServer]:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "kms-ca")
    rogue_ca = _ca(directory, "rogue-ca")
    server = _leaf(
        directory,
        "kms",
        ca,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _leaf(directory, "hostseal-client", ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = _leaf(directory, "rogue-client", rogue_ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    port = _free_port()
    config = directory / "server.conf"
    policies = directory / "policies"
    policies.mkdir(exist_ok=True)
    config.write_text(
        "[server]\n"
        "hostname=127.0.0.1\n"
        f"port={port}\n"
        f"certificate_path={server.cert}\n"
        f"key_path={server.key}\n"
        f"ca_path={ca[2]}\n"
        "auth_suite=TLS1.2\n"
        "enable_tls_client_auth=True\n"
        f"policy_path={policies}\n"
        f"database_path={directory / 'kms.sqlite'}\n"
        "logging_level=INFO\n"
    )
    log = directory / "server.log"
    server_bin = Path(sys.executable).parent / "pykmip-server"
    with (directory / "server.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [str(server_bin), "-f", str(config), "-l", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: the multiprocessing manager too
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "pykmip-server did not start: "
                    + (directory / "server.stderr").read_text()[-2000:]
                )
            time.sleep(0.05)
        yield KmipServer("127.0.0.1", port, ca[2], client, rogue, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # the server's multiprocessing manager, if it outlived the server
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
