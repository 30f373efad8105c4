"""Where a client finds the attestation service when told nothing: its URL, and the CA
certificate a server on this machine generated under its data directory.

The one place these defaults are written: the server takes its default data directory and the
name of its CA file from here (:mod:`hostseal.server.settings`, :mod:`hostseal.server.http.tls`).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SERVER = "https://127.0.0.1:8443"
DEFAULT_SERVER_DATA = Path("/var/lib/hostseal/server")  # HOSTSEAL_SERVER_DATA, --data-dir
TLS_DIR = "tls"  # under the data directory: the generated CA and server certificate
CA_FILE = "ca.pem"


def server_ca_file(data_dir: Path) -> Path:
    """The CA certificate a server generates under its data directory: ``<data>/tls/ca.pem``."""
    return data_dir / TLS_DIR / CA_FILE
