r"""The client of the attestation service's REST API (httpx): one server, one token, one CA.

Used by the admin CLI (``hostseal host|alarm|policy|escrow``), the agent and key release. The
token comes from a file (``--token-file`` / ``HOSTSEAL_TOKEN_FILE``) or ``HOSTSEAL_TOKEN``, never
from the command line; the server is reached over https:// only (:mod:`hostseal.client.transport`:
plain HTTP only to a loopback address, on request); the server's errors become
:class:`HostsealError`\ s named after the server's error type, with its message and remedy.
Bodies are JSON, or the wire models of :mod:`hostseal.client.wire` (:meth:`Client.send`).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from hostseal.client.defaults import DEFAULT_SERVER_DATA, server_ca_file
from hostseal.client.transport import check_server_url
from hostseal.errors import HostsealError

Answer = TypeVar("Answer", bound=BaseModel)


class ApiError(HostsealError):
    """The server refused a request; the subclass is named after the server's error type
    (``kind``), ``status`` is the HTTP status."""

    status: int = 0

    @property
    def kind(self) -> str:
        return type(self).__name__


class ServiceUnreachable(HostsealError):
    """The attestation service could not be reached (address, network, TLS)."""


class UnexpectedAnswer(HostsealError):
    """The server's answer does not have the shape of this version's wire model."""


_ERROR_TYPES: dict[str, type[ApiError]] = {}


def _api_error(name: str) -> type[ApiError]:
    if not name.isidentifier():
        name = "ApiError"
    if name not in _ERROR_TYPES:
        _ERROR_TYPES[name] = type(name, (ApiError,), {})
    return _ERROR_TYPES[name]


class Client:
    """One server, one token, one CA: JSON in and out, server errors become HostsealErrors."""

    def __init__(
        self,
        server: str,
        token: str | None,
        verify: ssl.SSLContext | bool,
        *,
        allow_plain_http_loopback: bool = False,
        timeout: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # every call carries a token or (enrolment) receives one: https:// only, checked
        # before any connection is made (hostseal.client.transport)
        self.server = check_server_url(server, allow_plain_http_loopback=allow_plain_http_loopback)
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            verify=verify,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, method: str, path: str, body: BaseModel | None, answer: type[Answer]) -> Answer:
        """``body`` (a wire model; None: no body) to ``path``; the server's answer as ``answer``."""
        data = self.call(method, path, body=body.model_dump(mode="json") if body else None)
        try:
            return answer.model_validate(data)
        except ValidationError as exc:
            raise UnexpectedAnswer(
                f"The answer of {self.server} to {method} {path} is not what this version of "
                f"hostseal expects: {exc.error_count()} field(s) differ.",
                "Check that the server and this host run the same hostseal version.",
            ) from None

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """JSON ``body`` to ``path``; the server's JSON answer."""
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.ConnectError as exc:
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
                raise ServiceUnreachable(
                    f"The attestation service at {self.server} could not be reached: its TLS "
                    f"certificate could not be verified ({text}).",
                    "Give the server's CA certificate with --ca or HOSTSEAL_SERVER_CA (the "
                    "server prints its path with 'hostseal server ca-cert').",
                ) from exc
            raise ServiceUnreachable(
                f"The attestation service at {self.server} could not be reached: {text}.",
                "Check --server / HOSTSEAL_SERVER and that 'hostseal server run' is running; "
                "agents retry by themselves.",
            ) from exc
        except httpx.HTTPError as exc:
            raise HostsealError(
                f"The request to {self.server} failed: {exc}", "Try again."
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_error:
            if isinstance(data, dict) and "message" in data:
                extra = {k: v for k, v in data.items() if k not in ("error", "message", "remedy")}
                error = _api_error(str(data.get("error", "ApiError")))(
                    str(data["message"]), str(data.get("remedy", "")), extra
                )
                error.status = response.status_code
                raise error
            error = ApiError(
                f"The server answered {response.status_code} to {method} {path}.",
                "Check that --server points at a hostseal server.",
            )
            error.status = response.status_code
            raise error
        return data


def read_token(token_file: Path | None) -> str:
    """The token from ``token_file``, else ``HOSTSEAL_TOKEN_FILE``, else ``HOSTSEAL_TOKEN``."""
    path = token_file or (
        Path(os.environ["HOSTSEAL_TOKEN_FILE"]) if os.environ.get("HOSTSEAL_TOKEN_FILE") else None
    )
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise HostsealError(
                f"Cannot read the token file {path}: {exc.strerror or exc}.",
                "Give a readable file holding the token.",
            ) from exc
        if value:
            return value
        raise HostsealError(f"The token file {path} is empty.", "Put the token in it.")
    value = os.environ.get("HOSTSEAL_TOKEN", "").strip()
    if not value:
        raise HostsealError(
            "No API token: set HOSTSEAL_TOKEN or give --token-file.",
            "Create one on the server: hostseal server token create --role viewer --name NAME.",
        )
    return value


def tls_verify(ca: Path | None, server: str) -> ssl.SSLContext | bool:
    """What to verify the server's certificate with: ``ca``, else the local server's CA when
    readable, else the system's trust store."""
    if ca is None and server.startswith("https://"):
        data = Path(os.environ.get("HOSTSEAL_SERVER_DATA") or DEFAULT_SERVER_DATA)
        local = server_ca_file(data)
        if os.access(local, os.R_OK):
            ca = local
    return trust(ca)


def trust(ca: Path | None) -> ssl.SSLContext | bool:
    """What to verify the server's certificate with: ``ca``, else the system's trust store."""
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise HostsealError(
            f"The CA certificate {ca} cannot be used: {exc}.",
            "Give the server's CA certificate (hostseal server ca-cert prints its path).",
        ) from exc
