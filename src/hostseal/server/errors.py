"""Errors of the service, each with the HTTP status the API answers it with, and
:func:`http_status`: the status of any error (the API's and the dashboard's)."""

from __future__ import annotations

from hostseal.attest.errors import AttestError
from hostseal.errors import HostsealError
from hostseal.measure.errors import EventLogError
from hostseal.secureconfig.errors import RecoveryKeyError

# errors of the pure cores that refuse what a request sent: 422
_REFUSED_INPUT: tuple[type[HostsealError], ...] = (EventLogError, RecoveryKeyError, AttestError)


def http_status(err: HostsealError) -> int:
    """The status code of an error: the service's own say it; a refused input is 422."""
    status = getattr(err, "http_status", None)
    if isinstance(status, int):
        return status
    return 422 if isinstance(err, _REFUSED_INPUT) else 500


class ServerError(HostsealError):
    """Base of the service's errors; ``http_status`` is the answer's status code."""

    http_status: int = 400


class Unauthenticated(ServerError):
    """No token, or a token the service does not know (or revoked). ``reason`` (no-token,
    malformed-header, unknown-token, revoked-token, host-removed) is counted in ``/metrics``
    and logged with the route and address, never the token (:mod:`hostseal.server.http.guard`)."""

    http_status = 401

    def __init__(self, message: str, remedy: str = "", *, reason: str = "unauthenticated") -> None:
        super().__init__(message, remedy)
        self.reason: str | None = reason


class Forbidden(ServerError):
    """The token is valid but its role (or host binding) does not allow this. A refusal for
    the token's role has ``reason`` ``wrong-role`` (counted and logged as a failed
    authentication); other refusals have none."""

    http_status = 403

    def __init__(self, message: str, remedy: str = "", *, reason: str | None = None) -> None:
        super().__init__(message, remedy)
        self.reason: str | None = reason


class NotFound(ServerError):
    """No such host, alarm, policy, enrolment."""

    http_status = 404


class Conflict(ServerError):
    """The request is valid but the current state forbids it."""

    http_status = 409


class Unprocessable(ServerError):
    """The request is well-formed JSON but its content is refused."""

    http_status = 422


class EkNotTrusted(Forbidden):
    """The EK has no certificate chain to the trust store and the EK policy requires one."""


class CredentialActivationFailed(Forbidden):
    """The secret returned by ActivateCredential is not the one the service sealed."""


class EnrolmentUnknown(NotFound):
    """No enrolment with that id (never started, or removed)."""


class EnrolmentUsed(Conflict):
    """An enrolment id may be finished once."""


class EnrolmentExpired(Conflict):
    """The enrolment was started too long ago."""


class HostNotTrusted(Forbidden):
    """The host's agent may not attest yet (pending approval)."""


class NonceUnknown(Conflict):
    """The nonce was not issued to this host."""


class NonceReplayed(Conflict):
    """The nonce was already used: a replayed quote."""


class NonceExpired(Conflict):
    """The nonce is older than its lifetime."""


class EvidenceMalformed(Unprocessable):
    """A field of the evidence cannot be decoded."""


class ReasonRequired(Unprocessable):
    """Sensitive reads and changes need a stated reason."""


class PolicyRefused(Unprocessable):
    """A reference policy that is empty, invalid or accepts everything."""


class AlarmConditionHolds(Conflict):
    """An alarm cannot be reset by hand while the condition that raised it still holds."""


class ServerKeyError(ServerError):
    """The escrow server key is missing, unreadable, too open or not the one the keys need."""

    http_status = 500


class EventLogUnknown(Unprocessable):
    """Evidence named the host's event log by its SHA-256, and the server holds no such log."""


class TpmChangeRequested(Conflict):
    """Another TPM enrolled under a known host's name: kept as a request for an operator; the
    host is not changed."""


class TpmChangeRejected(Conflict):
    """An operator rejected this TPM for this host name."""


class TooManyTpmChangeRequests(ServerError):
    """The host name has as many open TPM change requests as the service keeps."""

    http_status = 429


class EventLogTooLarge(ServerError):
    """The evidence's event log is larger than the service stores (``max_eventlog``)."""

    http_status = 413


class RequestTooLarge(ServerError):
    """A request body over the server's limit (``max_body``, ``max_evidence_body``)."""

    http_status = 413


class TooManyRequests(ServerError):
    """Too many requests of one kind from one client address (``retry_after``: seconds)."""

    http_status = 429

    def __init__(self, message: str, remedy: str, retry_after: int) -> None:
        super().__init__(message, remedy)
        self.retry_after = retry_after
