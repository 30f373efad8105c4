"""The one base error of hostseal.

Every error says what happened (``message``) and what to do about it (``remedy``). The CLI turns
them into text and an exit code in exactly one place (:func:`hostseal.cli.main.main`); the library
never prints and never exits.

Exit codes (documented in the README):

* ``1`` -- an operation failed (:class:`HostsealError` and most subclasses);
* ``2`` -- the command line was wrong (click's usage errors);
* ``3`` -- a security violation: the TPM refused to release a sealed key
  (:class:`SecurityViolation`).
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SECURITY_VIOLATION = 3


class HostsealError(Exception):
    """Something went wrong; ``message`` says what, ``remedy`` says what to do."""

    exit_code: int = EXIT_FAILURE

    def __init__(
        self, message: str, remedy: str = "", details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.details: dict[str, object] = details or {}

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.message} {self.remedy}"
        return self.message

    def to_dict(self) -> dict[str, object]:
        """The error as JSON-ready data, for ``--json`` output and the API."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "remedy": self.remedy,
            **self.details,
        }


class SecurityViolation(HostsealError):
    """The TPM would not release a sealed key: the platform is not the one sealed to."""

    exit_code = EXIT_SECURITY_VIOLATION
