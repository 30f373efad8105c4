"""Key release tied to attestation: keys go only to hosts whose last attestation passed.

When hostseal runs with an attestation service, every key provider is wrapped in a
:class:`GatedProvider`: before a data key is created or given out, :meth:`AttestationGate.
release_check` asks a :class:`VerdictSource` for this host's last verdict and refuses
(:class:`KeyReleaseRefused`, with the reason and what to do) unless it is ``passed``. The check
fails closed: an unreachable service releases nothing.

Verdict sources:

* :class:`HttpVerdictSource` -- the attestation service: ``GET /v1/attest/status`` with the
  agent's token, through the shared client (:mod:`hostseal.client`: https:// only, the
  answer read as :class:`hostseal.client.wire.AttestStatus`). The service answers with the
  host's status as ``hostseal host show`` gives it: ``passed`` only while its last attestation
  passed and is current (``not-reporting`` as soon as the host is late).
* :class:`StaticVerdictSource` -- verdicts set in code, for tests and demos.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hostseal.client.transport import check_server_url
from hostseal.errors import HostsealError
from hostseal.keyprovider.base import DataKey, KeyProvider
from hostseal.keyprovider.errors import KeyReleaseRefused

if TYPE_CHECKING:
    import httpx

PASSED = "passed"


@dataclass(frozen=True)
class Verdict:
    """A host's last attestation verdict, as the attestation service reports it."""

    host: str
    status: str
    messages: tuple[str, ...] = ()
    last_attested: str | None = None


class VerdictSource(Protocol):
    def verdict(self, host: str) -> Verdict: ...


@dataclass
class StaticVerdictSource:
    """Verdicts held in memory (tests, demos): ``set(host, "failed", ["Secure Boot is off"])``."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)

    def set(self, host: str, status: str, messages: Iterable[str] = ()) -> None:
        self.verdicts[host] = Verdict(host, status, tuple(messages))

    def verdict(self, host: str) -> Verdict:
        return self.verdicts.get(host, Verdict(host, "not-reporting"))


class HttpVerdictSource:
    """The attestation service: ``GET {server}/v1/attest/status`` with this host's agent token
    (the answer names the host the token belongs to; it must be ``host``)."""

    def __init__(
        self,
        server: str,
        token_file: Path,
        ca: Path | None = None,
        timeout: float = 10.0,
        *,
        allow_plain_http_loopback: bool = False,
    ) -> None:
        self.server = server.rstrip("/")
        self.allow_plain_http_loopback = allow_plain_http_loopback
        self.token_file = token_file
        self.ca = ca
        self.timeout = timeout
        self.transport: httpx.BaseTransport | None = None  # for tests

    def verdict(self, host: str) -> Verdict:
        # the client (httpx, pydantic) only when asked: key providers are used without release
        from hostseal.client.http import (
            ApiError,
            Client,
            ServiceUnreachable,
            UnexpectedAnswer,
            trust,
        )
        from hostseal.client.wire import AttestStatus

        try:  # the agent token goes over https:// only (hostseal.client.transport)
            check_server_url(self.server, allow_plain_http_loopback=self.allow_plain_http_loopback)
        except HostsealError as err:
            message = f"{err.message.rstrip('.')}; no vTPM key is released."
            raise KeyReleaseRefused(message, err.remedy) from None
        try:
            token = self.token_file.read_text().strip()
        except OSError as err:
            raise KeyReleaseRefused(
                f"Cannot read the agent token {self.token_file} ({err.strerror or err}), so "
                "this host cannot prove to the attestation service that it passed "
                "attestation; no vTPM key is released.",
                "Enrol the host with hostseal agent (run as root), then try again.",
            ) from None
        try:
            with Client(
                self.server,
                token,
                True if self.transport is not None else trust(self.ca),
                allow_plain_http_loopback=self.allow_plain_http_loopback,
                timeout=self.timeout,
                transport=self.transport,
            ) as client:
                answer = client.send("GET", "/v1/attest/status", None, AttestStatus)
        except ApiError as err:
            raise KeyReleaseRefused(
                f"The attestation service answered {err.status} for host {host!r} "
                f"({err.message}); no vTPM key is released.",
                "Check that the host is enrolled and its agent token is valid "
                "(hostseal agent status).",
            ) from None
        except UnexpectedAnswer:
            raise KeyReleaseRefused(
                f"The attestation service's answer for host {host!r} has no host and status; "
                "no vTPM key is released.",
                "Check that the server and this host run the same hostseal version.",
            ) from None
        except HostsealError as err:  # unreachable (the network's words), a CA that is unusable
            cause = err.__cause__ if isinstance(err, ServiceUnreachable) else None
            why = str(cause) if cause is not None else err.message
            raise KeyReleaseRefused(
                f"The attestation service at {self.server} could not be asked whether host "
                f"{host!r} passed attestation ({why.rstrip('.')}); no vTPM key is released "
                "without it.",
                "Check that the service runs and is reachable from this host, then try again.",
            ) from None
        if answer.host != host:
            raise KeyReleaseRefused(
                f"The agent token on this host belongs to host {answer.host!r}, not "
                f"{host!r}; no vTPM key is released.",
                "Check the --host given to hostseal keyprovider require-attestation.",
            )
        return Verdict(host, answer.status, tuple(answer.messages), answer.last_attested_at)


_REMEDIES = {
    "failed": "Fix what attestation reported, let the agent attest again (hostseal agent run "
    "--once), then try again.",
    "warning": "Resolve the warning, let the agent attest again (hostseal agent run --once), "
    "then try again.",
    "not-reporting": "Start the agent (systemctl start hostseal-agent) so that the host is "
    "attested, then try again.",
    "enrolled": "Let the agent attest once (hostseal agent run --once), then try again.",
    "pending-approval": "An operator must approve the host's TPM (hostseal host approve NAME).",
}


@dataclass(frozen=True)
class AttestationGate:
    """Releases keys only while ``host``'s last attestation verdict is ``passed``."""

    source: VerdictSource
    host: str

    def release_check(self, host: str | None = None) -> None:
        name = host or self.host
        verdict = self.source.verdict(name)
        if verdict.status == PASSED:
            return
        why = f": {'; '.join(verdict.messages)}" if verdict.messages else ""
        raise KeyReleaseRefused(
            f"Host {name!r} did not pass attestation (last status: {verdict.status}{why}). "
            "Keys for vTPMs are released only to hosts whose last attestation passed.",
            _REMEDIES.get(verdict.status, _REMEDIES["failed"]),
            details={"host": name, "status": verdict.status, "messages": list(verdict.messages)},
        )


class GatedProvider:
    """A key provider that runs ``gate.release_check()`` before creating or giving out a key."""

    def __init__(self, inner: KeyProvider, gate: AttestationGate) -> None:
        self.inner = inner
        self.gate = gate

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def kind(self) -> str:
        return self.inner.kind

    def create_key(self, label: str) -> DataKey:
        self.gate.release_check()
        return self.inner.create_key(label)

    def get_key(self, key_id: str) -> DataKey:
        self.gate.release_check()
        return self.inner.get_key(key_id)

    def key_record(self, key: DataKey) -> dict[str, object]:
        return self.inner.key_record(key)

    def key_for_record(self, record: dict[str, object]) -> DataKey:
        self.gate.release_check()
        return self.inner.key_for_record(record)

    def adopt_key(self, record: dict[str, object]) -> DataKey:
        self.gate.release_check()
        return self.inner.adopt_key(record)

    def destroy_key(self, key_id: str) -> None:
        self.inner.destroy_key(key_id)

    def describe(self) -> dict[str, object]:
        return {**self.inner.describe(), "release": f"attestation of {self.gate.host}"}
