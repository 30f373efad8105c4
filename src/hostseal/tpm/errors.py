"""Errors of the TPM layer: each says what the TPM (or the way to it) did and what to do."""

from __future__ import annotations

from hostseal.errors import HostsealError


class TpmError(HostsealError):
    """The TPM answered a command with an error."""


class TctiInvalid(TpmError):
    """The TCTI string does not name a way to reach a TPM."""


class TpmUnavailable(TpmError):
    """No TPM answered at the given TCTI (absent, not started, wrong address, device busy)."""


class TpmBusy(TpmError):
    """The TPM asked to be retried (self-test running, or another user holds it)."""


class TpmLockout(TpmError):
    """The TPM is in dictionary-attack lockout and refuses authorisations."""


class TpmNotSupported(TpmError):
    """The TPM is present but cannot be used by hostseal (for example a TPM 1.2)."""
