"""The KMIP key provider: data keys from an external key management server (KMS).

hostseal speaks KMIP 1.2 through PyKMIP's ``ProxyKmipClient`` over **mutual TLS**: the client
presents its certificate and key (files readable by root only), and checks the server's
certificate against the configured CA *and its host name* (PyKMIP itself does not check the
name; hostseal replaces its socket set-up with one that does). Keys are AES-256, created and
activated on the server, fetched by their KMIP unique identifier; nothing is cached on disk.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hostseal.errors import HostsealError
from hostseal.keyprovider.base import DataKey, check_record_kcv, record_key_id
from hostseal.keyprovider.errors import KeyNotFound, KeyProviderError, KmipUnavailable

KIND = "kmip"
DEFAULT_PORT = 5696


def _secure_socket_factory(proxy: Any, host: str, ca: str, cert: str, key: str) -> None:
    """Make PyKMIP's proxy open TLS 1.2+ with certificate *and host name* verification."""

    def create_socket(sock: Any) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(ca)
        context.load_cert_chain(cert, key)
        proxy.socket = context.wrap_socket(sock, server_hostname=host)
        proxy.socket.settimeout(proxy.timeout)

    proxy._create_socket = create_socket


class KmipProvider:
    """A KMS reached over KMIP with mutual TLS."""

    kind = KIND

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        ca: Path,
        cert: Path,
        key: Path,
        timeout: float = 10.0,
    ) -> None:
        self._name = name
        self.host = host
        self.port = port
        self.ca = ca
        self.cert = cert
        self.key = key
        self.timeout = timeout

    @property
    def name(self) -> str:
        return self._name

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def _unavailable(self, err: BaseException) -> KmipUnavailable:
        text = str(err) or type(err).__name__
        if isinstance(err, ssl.SSLCertVerificationError):
            remedy = (
                f"The server's certificate did not verify against {self.ca} for host "
                f"{self.host!r}: configure the CA that issued it, and a host name or address "
                "its certificate names."
            )
        elif isinstance(err, ssl.SSLError):
            remedy = (
                "The TLS handshake failed: check that the server trusts the CA of this "
                f"client's certificate ({self.cert}) and that the certificate allows client "
                "authentication."
            )
        else:
            remedy = (
                f"Check that the KMS listens at {self.server} and that this host may reach "
                "it (firewall, DNS)."
            )
        return KmipUnavailable(
            f"Could not reach the KMIP key provider {self.name!r} at {self.server}: {text}.",
            remedy,
        )

    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        for path in (self.ca, self.cert, self.key):
            if not Path(path).is_file():
                raise KeyProviderError(
                    f"KMIP key provider {self.name!r}: the file {path} does not exist.",
                    "Configure the provider again with the CA, client certificate and client "
                    f"key files: hostseal keyprovider remove {self.name} --yes, then "
                    f"hostseal keyprovider add {self.name} --type kmip ...",
                )
        logging.getLogger("kmip").addHandler(logging.NullHandler())
        logging.getLogger("kmip").propagate = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from kmip.pie.client import ProxyKmipClient

            client = ProxyKmipClient(
                hostname=self.host,
                port=self.port,
                cert=str(self.cert),
                key=str(self.key),
                ca=str(self.ca),
            )
        client.proxy.timeout = self.timeout
        _secure_socket_factory(client.proxy, self.host, str(self.ca), str(self.cert), str(self.key))
        try:
            client.open()
        except (OSError, ValueError) as err:
            raise self._unavailable(err) from None
        try:
            yield client
        except HostsealError:
            raise
        except (OSError, EOFError) as err:
            raise self._unavailable(err) from None
        except Exception as err:
            raise self._failure(err) from None
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def _failure(self, err: Exception) -> KeyProviderError:
        reason = getattr(getattr(err, "reason", None), "name", "")
        if reason == "ITEM_NOT_FOUND":
            return KeyNotFound(
                f"The KMIP key provider {self.name!r} has no such key ({err}).",
                "The key was destroyed on the KMS, or this is another KMS: configure the KMS "
                "that holds the key.",
            )
        if reason == "PERMISSION_DENIED":
            return KeyProviderError(
                f"The KMS {self.server} refused the operation: {err}.",
                "Keys belong to the client identity that created them: use the same client "
                "certificate, or grant this client access on the KMS.",
            )
        if "ConnectionClosed" in type(err).__name__ or "ssl" in type(err).__module__:
            return self._unavailable(err)
        return KeyProviderError(
            f"The KMS {self.server} answered with an error: {err}.",
            "See the KMS's log for the reason.",
        )

    # -- operations ----------------------------------------------------------------------
    def check(self) -> None:
        """Open a mutual-TLS session and run one request (raises when it fails)."""
        with self._client() as client:
            client.locate(maximum_items=1)

    def create_key(self, label: str) -> DataKey:
        from kmip import enums

        with self._client() as client:
            uid = client.create(enums.CryptographicAlgorithm.AES, 256, name=label)
            client.activate(uid)
            return self._fetch(client, str(uid))

    def _fetch(self, client: Any, key_id: str) -> DataKey:
        obj = client.get(key_id)
        material = bytes(getattr(obj, "value", b""))
        algorithm = getattr(getattr(obj, "cryptographic_algorithm", None), "name", "")
        if algorithm != "AES" or len(material) != 32:
            raise KeyProviderError(
                f"Object {key_id} on the KMS {self.server} is not an AES-256 key "
                f"({algorithm or 'no algorithm'}, {len(material) * 8} bits).",
                "Check the key id in the vTPM record.",
            )
        return DataKey(key_id, material)

    def get_key(self, key_id: str) -> DataKey:
        with self._client() as client:
            return self._fetch(client, key_id)

    def key_record(self, key: DataKey) -> dict[str, object]:
        return {
            "provider": self.name,
            "kind": KIND,
            "server": self.server,
            "key_id": key.key_id,
            "kcv": key.check_value,
        }

    def key_for_record(self, record: dict[str, object]) -> DataKey:
        key = self.get_key(record_key_id(record))
        check_record_kcv(record, key)
        return key

    def adopt_key(self, record: dict[str, object]) -> DataKey:
        return self.key_for_record(record)

    def destroy_key(self, key_id: str) -> None:
        from kmip import enums

        with self._client() as client:
            with contextlib.suppress(Exception):
                client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, key_id)
            client.destroy(key_id)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": KIND,
            "server": self.server,
            "ca": str(self.ca),
            "cert": str(self.cert),
            "key": str(self.key),
        }
