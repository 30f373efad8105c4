"""The agent's HTTP client: TLS verified against the service's CA, errors as HostsealErrors."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from hostseal.errors import HostsealError


class ServiceError(HostsealError):
    """The attestation service answered with an error."""

    def __init__(self, status: int, message: str, remedy: str, kind: str) -> None:
        super().__init__(message, remedy, {"status": status, "kind": kind})
        self.status = status
        self.kind = kind


class ServiceUnreachable(HostsealError):
    """The attestation service could not be reached."""


class Client:
    def __init__(
        self, url: str, ca: Path | None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        verify: Any = ssl.create_default_context(cafile=str(ca)) if ca is not None else True
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, verify=verify, timeout=timeout)
        self.token = token

    def close(self) -> None:
        self._http.close()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self._http.post(path, json=body, headers=headers)
        except httpx.HTTPError as err:
            raise ServiceUnreachable(
                f"The attestation service at {self.url} could not be reached: {err}.",
                "Check the --server URL, that the service runs, and the network; the agent "
                "retries by itself.",
            ) from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            raise ServiceError(
                response.status_code,
                str(data.get("message") or f"HTTP {response.status_code} from {path}"),
                str(data.get("remedy") or ""),
                str(data.get("error") or ""),
            )
        if not isinstance(data, dict):
            raise ServiceError(response.status_code, f"Unexpected answer from {path}.", "", "")
        return data
