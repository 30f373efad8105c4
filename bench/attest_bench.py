"""Quote verifications per second per core, beside the physical limit measured in the same run.

Evidence of corpus size: a quote over all 24 sha256 PCRs, a ~50 KB event log (sha1 + sha256, the
realistic log of ``eventlog_bench.py``) that replays to them, a 32-byte nonce; AKs RSA-2048
(RSASSA-SHA256) and ECDSA P-256 (SHA-256), keys made with ``cryptography``, TPMS_ATTEST built
here. The physical limit is one signature verification with ``cryptography`` alone: a quote
verification cannot be faster. One thread, so the figures are per core.

Run: ``.venv/bin/python bench/attest_bench.py``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

from eventlog_bench import written_log  # noqa: E402
from hostseal.attest.quote import pcr_digest, verify_quote  # noqa: E402
from hostseal.attest.tpm_structures import (  # noqa: E402
    ALG_ECDSA,
    ALG_RSASSA,
    ALG_SHA256,
    PcrSelection,
    Signature,
    encode_quote_attest,
)
from hostseal.attest.tpmkey import load_ak_public  # noqa: E402
from hostseal.measure import parse_event_log, replay  # noqa: E402
from hostseal.measure.replay import initial_value  # noqa: E402

BUDGET = 1.5  # seconds per measurement


def rate(function: Callable[[], object], budget: float = BUDGET) -> float:
    """Calls per second over ``budget`` seconds (after a warm-up call)."""
    function()
    calls, start = 0, time.perf_counter()
    deadline = start + budget
    while True:
        for _ in range(10):
            function()
        calls += 10
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def evidence() -> tuple[bytes, bytes, dict[str, dict[int, bytes]], bytes]:
    raw_log = written_log(("sha1", "sha256"))
    log = parse_event_log(raw_log)
    replayed = replay(log, ["sha256"])["sha256"]
    values = {n: replayed.get(n) or initial_value(32, n, log.startup_locality) for n in range(24)}
    pcrs = {"sha256": values}
    selection = (PcrSelection(ALG_SHA256, tuple(range(24))),)
    nonce = os.urandom(32)
    attest = encode_quote_attest(
        extra_data=nonce,
        selection=selection,
        pcr_digest=pcr_digest(selection, pcrs, "sha256"),
        qualified_signer=b"\x00\x0b" + os.urandom(32),
    )
    return attest, nonce, pcrs, raw_log


def main() -> int:
    attest, nonce, pcrs, raw_log = evidence()
    log = parse_event_log(raw_log)
    print(
        f"evidence: TPMS_ATTEST {len(attest)} bytes over sha256 PCR 0-23; event log "
        f"{len(raw_log)} bytes, {len(log.events)} events, banks {'+'.join(log.banks)}; "
        f"one thread (this machine has {os.cpu_count()} CPUs)\n"
    )
    rsa_key = rsa.generate_private_key(65537, 2048)
    ecc_key = ec.generate_private_key(ec.SECP256R1())
    sha256 = hashes.SHA256()
    rsa_raw = rsa_key.sign(attest, padding.PKCS1v15(), sha256)
    ecc_der = ecc_key.sign(attest, ec.ECDSA(sha256))
    r, s = decode_dss_signature(ecc_der)
    cases = {
        "RSA-2048 RSASSA-SHA256": (
            rsa_key.public_key(),
            Signature(ALG_RSASSA, ALG_SHA256, rsa_sig=rsa_raw).to_bytes(),
            lambda: rsa_key.public_key().verify(rsa_raw, attest, padding.PKCS1v15(), sha256),
        ),
        "ECDSA P-256 SHA-256": (
            ecc_key.public_key(),
            Signature(
                ALG_ECDSA, ALG_SHA256, r=r.to_bytes(32, "big"), s=s.to_bytes(32, "big")
            ).to_bytes(),
            lambda: ecc_key.public_key().verify(ecc_der, attest, ec.ECDSA(sha256)),
        ),
    }
    log_only = rate(lambda: replay(parse_event_log(raw_log)))
    print(f"event log parse + replay alone: {log_only:10,.0f} /s\n")
    header = f"{'AK':<24} {'signature alone':>16} {'quote':>10} {'+ log':>10} {'+ parsed log':>13}"
    print(header)
    print("-" * len(header))
    for name, (public, signature, physical) in cases.items():
        print(f"{name:<24} {_row(public, signature, physical, attest, nonce, pcrs, raw_log)}")
    return 0


def _row(
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signature: bytes,
    physical: Callable[[], object],
    attest: bytes,
    nonce: bytes,
    pcrs: dict[str, dict[int, bytes]],
    raw_log: bytes,
) -> str:
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ak = load_ak_public(pem)
    log = parse_event_log(raw_log)
    limit = rate(physical)
    quote_only = rate(lambda: verify_quote(ak, attest, signature, nonce=nonce, pcrs=pcrs))
    with_log = rate(
        lambda: verify_quote(ak, attest, signature, nonce=nonce, pcrs=pcrs, eventlog=raw_log)
    )
    with_parsed = rate(
        lambda: verify_quote(ak, attest, signature, nonce=nonce, pcrs=pcrs, eventlog=log)
    )
    return (
        f"{limit:>14,.0f}/s {quote_only:>8,.0f}/s {with_log:>8,.0f}/s {with_parsed:>11,.0f}/s"
        f"   (quote + log: {with_log / limit:.0%} of the limit)"
    )


if __name__ == "__main__":
    sys.exit(main())
