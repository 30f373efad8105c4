"""Keylime's own verification functions on hostseal's benchmark evidence (run by verify_bench.py
with the Python of a separate virtual environment where Keylime is installed).

Input: a JSON file (argv[1]) with the AK (TPM2B_PUBLIC), the quote in Keylime's wire format
(``r<TPMS_ATTEST>:<TPMT_SIGNATURE>:<PCR blob as tpm2_quote writes it>``, base64 fields), the nonce,
the binary event log and the time budget. Output (stdout): one JSON object with calls per second.

Measured, one thread each:

* ``quote`` -- ``Tpm._tpm2_checkquote``: the AK from its TPM2B_PUBLIC, ``tpm_util.checkquote``
  (signature, nonce, PCR digest), as the verifier calls it;
* ``quote+mb`` -- ``Tpm().check_quote`` with the event log and a measured-boot reference state
  (the ``example`` policy, made from this log by ``keylime-policy create measured-boot``):
  quote, then ``mba.bootlog_parse`` (``tpm2_eventlog`` + enrichment), the replayed PCRs compared
  with the quoted ones, and ``bootlog_evaluate`` of the policy (``count=0``: evaluated every time,
  as for a first attestation).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
import types
from collections.abc import Callable
from typing import Any


def rate(function: Callable[[], object], budget: float) -> float:
    function()
    calls, start = 0, time.perf_counter()
    while True:
        function()
        calls += 1
        now = time.perf_counter()
        if now - start >= budget:
            return calls / (now - start)


def _without_gpgme() -> None:
    """Keylime imports the GPGME binding (``gpg``) at module level for runtime-policy signatures,
    which this path never checks; where it is not installed an empty module stands in."""
    try:
        import gpg  # noqa: F401
    except ImportError:
        sys.modules["gpg"] = types.ModuleType("gpg")


def main() -> int:
    logging.disable(logging.CRITICAL)
    _without_gpgme()
    spec: dict[str, Any] = json.loads(open(sys.argv[1]).read())  # noqa: SIM115
    from keylime.common.algorithms import Hash
    from keylime.mba import mba
    from keylime.policy.create_mb_policy import create_mb_refstate
    from keylime.tpm.tpm_main import Tpm

    mba.load_imports(skip_custom_policies=True)
    budget = float(spec["budget"])
    ak = base64.b64decode(spec["ak_tpm2b_public"])
    nonce = base64.b64decode(spec["nonce"])
    quote: str = spec["quote"]
    out: dict[str, Any] = {}

    def quote_only() -> None:
        pcrs, err = Tpm._tpm2_checkquote(
            base64.b64encode(ak).decode(), quote, base64.b64encode(nonce).decode(), "sha256", False
        )
        if err or len(pcrs) != 24:
            raise RuntimeError(f"Keylime refused the quote: {err}")

    out["quote"] = rate(quote_only, budget)
    logging.disable(logging.NOTSET)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    refstate = create_mb_refstate(
        argparse.Namespace(
            eventlog_file=spec["eventlog_path"],
            without_secureboot=not spec["secure_boot"],
            output="/dev/null",
        )
    )
    logging.disable(logging.CRITICAL)
    if not refstate:
        out["quote+mb"] = None
        out["why"] = "keylime-policy create measured-boot failed on this log (see stderr)"
        print(json.dumps(out))
        return 0
    policy = json.dumps(refstate)
    eventlog = open(spec["eventlog_path"], "rb").read()  # noqa: SIM115
    tpm = Tpm()

    def full() -> None:
        failure = tpm.check_quote(
            None,
            nonce,
            None,
            quote,
            ak,
            tpm_policy={},
            ima_measurement_list="",  # no IMA on this host: PCR 10 stays at its reset value
            hash_alg=Hash.SHA256,
            mb_measurement_list=eventlog,
            mb_policy=policy,
            mb_policy_name="example",
            count=0,
            skip_clock_check=True,
        )
        if failure:
            events = [f"{e.event_id}: {e.context}" for e in failure.events]
            raise RuntimeError(f"Keylime's verdict is a failure: {events}")

    out["quote+mb"] = rate(full, budget)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
