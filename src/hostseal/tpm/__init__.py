"""The TPM layer: the only package of hostseal that imports ``tpm2_pytss``.

Edges, talking to a TPM: :mod:`~.device` (the session), :mod:`~.seal` and
:mod:`~.attestation`. Pure, values only: :mod:`~.tcti` (parses TCTI strings), :mod:`~.facts`
(decodes capability values) and :mod:`~.errors`.

The names from :mod:`~.device` (``open_tpm``, ``Tpm``, ``BANKS``, ``DIGEST_SIZES``) are loaded on
first use: importing this package for its errors, TCTI strings or facts does not load
``tpm2_pytss`` (about a second of start-up on an emulated machine).

>>> with open_tpm("swtpm:host=127.0.0.1,port=2321") as tpm:   # doctest: +SKIP
...     tpm.facts().sha256_active
True
"""

from typing import TYPE_CHECKING, Any

from hostseal.tpm.errors import (
    TctiInvalid,
    TpmBusy,
    TpmError,
    TpmLockout,
    TpmNotSupported,
    TpmUnavailable,
)
from hostseal.tpm.facts import Problem, TpmFacts
from hostseal.tpm.tcti import Tcti, parse_tcti

if TYPE_CHECKING:
    from hostseal.tpm.device import BANKS, DIGEST_SIZES, Tpm, open_tpm

_FROM_DEVICE = ("BANKS", "DIGEST_SIZES", "Tpm", "open_tpm")


def __getattr__(name: str) -> Any:
    """``open_tpm``, ``Tpm``, ``BANKS`` and ``DIGEST_SIZES``, imported from :mod:`~.device` when
    first asked for."""
    if name in _FROM_DEVICE:
        from hostseal.tpm import device

        return getattr(device, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BANKS",
    "DIGEST_SIZES",
    "Problem",
    "Tcti",
    "TctiInvalid",
    "Tpm",
    "TpmBusy",
    "TpmError",
    "TpmFacts",
    "TpmLockout",
    "TpmNotSupported",
    "TpmUnavailable",
    "open_tpm",
    "parse_tcti",
]
