"""The TPM layer: the only package of hostseal that imports ``tpm2_pytss``.

Edges, talking to a TPM: :mod:`~.device` (the session), :mod:`~.seal` and
:mod:`~.attestation`. Pure, values only: :mod:`~.tcti` (parses TCTI strings), :mod:`~.facts`
(decodes capability values) and :mod:`~.errors`.

>>> with open_tpm("swtpm:host=127.0.0.1,port=2321") as tpm:   # doctest: +SKIP
...     tpm.facts().sha256_active
True
"""

from hostseal.tpm.device import BANKS, DIGEST_SIZES, Tpm, open_tpm
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
