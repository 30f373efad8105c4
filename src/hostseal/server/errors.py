"""Errors of the service, each with the HTTP status the API answers it with."""

from __future__ import annotations

from hostseal.errors import HostsealError


class ServerError(HostsealError):
    """Base of the service's errors; ``http_status`` is the answer's status code."""

    http_status: int = 400


class Unauthenticated(ServerError):
    """No token, or a token the service does not know (or revoked)."""

    http_status = 401


class Forbidden(ServerError):
    """The token is valid but its role (or host binding) does not allow this."""

    http_status = 403


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


class TpmChanged(Conflict):
    """An enrolled host name presents a different EK."""


class HostNotTrusted(Forbidden):
    """The host's agent may not attest yet (pending approval, TPM changed)."""


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
