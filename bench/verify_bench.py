"""The verification core's throughput per core, beside the physical limit and beside Keylime.

Evidence as the corpus has it: the ubuntu-2404-amd-sevsnp event log (45,300 bytes, 117 events;
``HOSTSEAL_CORPUS``; another with ``HOSTSEAL_BENCH_LOG=<path in the corpus>``), or without the
corpus the ~50 KB log ``eventlog_bench.py`` writes (then without Keylime, whose policy needs a
real log);
a quote over all 24 sha256 PCRs (replayed from the log), a 32-byte nonce, AKs RSA-2048
(RSASSA-SHA256) and ECDSA P-256 as TPM2B_PUBLIC, made here with ``cryptography``. The policy is
the realistic one: ``capture_policy`` from the same log, then ``verdict.evaluate`` (Passed).

Measured in one thread, in this run:

* the physical limit: one signature verification with ``cryptography`` alone;
* hostseal: ``verify_quote`` (signature, nonce, PCR digest), + the event log (parse, replay,
  compare), + the policy (``evaluate``); then what the service runs, ``attest.appraise``, in its
  two cases: **first sight** of a boot (the full appraisal above, plus the log's SHA-256) and
  **same boot** (the steady state: the agent reports again before the host reboots, names the
  log by its digest, and the judgement of the first sight is reused after the quote's signature,
  nonce and PCR digest are checked);
* Keylime, installed by this script with pip into a separate virtual environment
  (``HOSTSEAL_KEYLIME_VENV``, default ``~/.cache/hostseal/keylime-venv``), through its own
  functions (``bench/_keylime_driver.py``): ``Tpm._tpm2_checkquote`` and ``Tpm().check_quote``
  with the event log and a measured-boot reference state made from it by Keylime. Keylime's
  event-log parser runs ``tpm2_eventlog`` (tpm2-tools) and needs ``libefivar.so.1`` (Debian
  ``libefivar1``); without them only its quote check is compared.

Targets: hostseal's verification >= 50% of the signature limit and >= 20x Keylime. Both
appraisal cases are printed against both; Keylime has one case (it parses the log each time).
Run: ``.venv/bin/python bench/verify_bench.py [--budget SECONDS] [--no-keylime]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

from hostseal.attest.appraise import appraise, policy_digest  # noqa: E402
from hostseal.attest.policy import capture_policy  # noqa: E402
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
from hostseal.attest.verdict import evaluate  # noqa: E402
from hostseal.measure import parse_event_log, replay  # noqa: E402
from hostseal.measure.replay import initial_value  # noqa: E402

KEYLIME = "keylime==7.14.*"
# imported by keylime 7.14 on this path but not declared as its dependencies
KEYLIME_EXTRA = (
    "cryptography",
    "pyyaml",
    "packaging",
    "pyasn1",
    "pyasn1-modules",
    "jsonschema",
    "lark",
)
AK_ATTRIBUTES = 0x00050072  # fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
# 45,300 bytes, 117 events, Ubuntu 24.04. (gdc-host.bin, 50 KB, is refused by Keylime: its replay
# ignores the StartupLocality event, so its PCR 0 differs from the TPM's; hostseal's does not.)
CORPUS_LOG = "go-tpm-tools/internal/test/eventlogs/ubuntu-2404-amd-sevsnp.bin"


def rate(function: Callable[[], object], budget: float) -> float:
    """Calls per second over ``budget`` seconds, after a warm-up call."""
    function()
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            function()
        calls += 10
        now = time.perf_counter()
        if now - start >= budget:
            return calls / (now - start)


def _b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def ak_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """The AK's TPMT_PUBLIC, as a TPM makes it (tpm2_createak)."""
    if isinstance(key, rsa.RSAPrivateKey):
        modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
        return (
            struct.pack(">HHI", 0x0001, ALG_SHA256, AK_ATTRIBUTES)
            + _b2(b"")
            + struct.pack(">HHHHI", 0x0010, ALG_RSASSA, ALG_SHA256, 2048, 0)
            + _b2(modulus)
        )
    numbers = key.public_key().public_numbers()
    return (
        struct.pack(">HHI", 0x0023, ALG_SHA256, AK_ATTRIBUTES)
        + _b2(b"")
        + struct.pack(">HHHHH", 0x0010, ALG_ECDSA, ALG_SHA256, 0x0003, 0x0010)
        + _b2(numbers.x.to_bytes(32, "big"))
        + _b2(numbers.y.to_bytes(32, "big"))
    )


def pcr_blob(values: dict[int, bytes]) -> bytes:
    """The PCR file of ``tpm2_quote -o`` (TPML_PCR_SELECTION and TPML_DIGESTs as in memory,
    little endian), which Keylime's agent sends and its verifier reads."""
    mask = sum(1 << n for n in values)
    out = struct.pack("<I", 1)
    for slot in range(16):
        if slot == 0:
            out += struct.pack("<HB", ALG_SHA256, 3) + mask.to_bytes(3, "little") + bytes(2)
        else:
            out += bytes(8)
    digests = [values[n] for n in sorted(values)]
    chunks = [digests[i : i + 8] for i in range(0, len(digests), 8)]
    out += struct.pack("<I", len(chunks))
    for chunk in chunks:
        out += struct.pack("<I", len(chunk))
        for slot in range(8):
            value = chunk[slot] if slot < len(chunk) else b""
            out += struct.pack("<H", len(value)) + value.ljust(64, b"\0")
    return out


def event_log() -> tuple[bytes, str, Path | None]:
    corpus = Path(os.environ.get("HOSTSEAL_CORPUS") or REPO.parent / "shared" / "realdata")
    path = corpus / os.environ.get("HOSTSEAL_BENCH_LOG", CORPUS_LOG)
    if path.is_file():
        return path.read_bytes(), f"corpus {path.relative_to(corpus)}", path
    from eventlog_bench import written_log

    return written_log(("sha1", "sha256")), "written by eventlog_bench (no corpus)", None


class Case:
    """One AK type: key, signed evidence, and the cryptography-only verification."""

    def __init__(self, name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self.name, self.key = name, key
        self.tpmt = ak_public(key)
        self.tpm2b = _b2(self.tpmt)
        self.ak_name = struct.pack(">H", ALG_SHA256) + hashlib.sha256(self.tpmt).digest()

    def sign(self, attest: bytes) -> None:
        sha256 = hashes.SHA256()
        if isinstance(self.key, rsa.RSAPrivateKey):
            raw = self.key.sign(attest, padding.PKCS1v15(), sha256)
            self.signature = Signature(ALG_RSASSA, ALG_SHA256, rsa_sig=raw).to_bytes()
            public_rsa = self.key.public_key()
            self.physical: Callable[[], object] = lambda: public_rsa.verify(
                raw, attest, padding.PKCS1v15(), sha256
            )
        else:
            der = self.key.sign(attest, ec.ECDSA(sha256))
            r, s = decode_dss_signature(der)
            self.signature = Signature(
                ALG_ECDSA, ALG_SHA256, r=r.to_bytes(32, "big"), s=s.to_bytes(32, "big")
            ).to_bytes()
            public_ec = self.key.public_key()
            self.physical = lambda: public_ec.verify(der, attest, ec.ECDSA(sha256))


def keylime_python() -> Path:
    """The separate virtual environment with Keylime, created (pip) when missing."""
    default = Path.home() / ".cache" / "hostseal" / "keylime-venv"
    venv = Path(os.environ.get("HOSTSEAL_KEYLIME_VENV") or default)
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import keylime.mba.mba, yaml, packaging, pyasn1_modules"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing {KEYLIME} into {venv} (pip) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", KEYLIME, *KEYLIME_EXTRA], check=True)
    return python


def run_keylime(case: Case, attest: bytes, nonce: bytes, log: Path, budget: float) -> Any:
    quote = "r" + ":".join(
        base64.b64encode(part).decode() for part in (attest, case.signature, case.blob)
    )
    spec = {
        "ak_tpm2b_public": base64.b64encode(case.tpm2b).decode(),
        "quote": quote,
        "nonce": base64.b64encode(nonce).decode(),
        "eventlog_path": str(log),
        "secure_boot": False,
        "budget": budget,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(spec, file)
        file.flush()
        done = subprocess.run(
            [str(keylime_python()), str(REPO / "bench" / "_keylime_driver.py"), file.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--no-keylime", action="store_true", help="skip the Keylime comparison")
    args = parser.parse_args()

    raw, origin, log_path = event_log()
    log = parse_event_log(raw)
    replayed = replay(log, ["sha256"])["sha256"]
    values = {n: replayed.get(n) or initial_value(32, n, log.startup_locality) for n in range(24)}
    pcrs = {"sha256": values}
    policy = capture_policy("gold", log, pcrs)
    selection = (PcrSelection(ALG_SHA256, tuple(range(24))),)
    nonce = os.urandom(32)
    print(
        f"evidence: event log {origin}, {len(raw):,} bytes, {len(log.events)} events; quote over "
        f"sha256 PCR 0-23; policy captured from the log (PCRs {list(policy.quote_pcrs)}); "
        f"one thread, {os.cpu_count()} CPUs\n"
    )
    cases = [
        Case("RSA-2048", rsa.generate_private_key(65537, 2048)),
        Case("ECDSA P-256", ec.generate_private_key(ec.SECP256R1())),
    ]
    header = (
        f"{'AK':<12} {'signature':>10} {'quote':>8} {'+log':>8} {'+policy':>8}"
        f" {'first sight':>12} {'same boot':>10} {'Keylime quote':>14} {'Keylime +mb':>12}"
    )
    print(header)
    print("-" * len(header))
    results = []
    digest_of_policy = policy_digest(policy)
    log_sha256 = hashlib.sha256(raw).hexdigest()
    for case in cases:
        attest = encode_quote_attest(
            extra_data=nonce,
            selection=selection,
            pcr_digest=pcr_digest(selection, pcrs, "sha256"),
            qualified_signer=case.ak_name,
        )
        case.sign(attest)
        case.blob = pcr_blob(values)
        ak = load_ak_public(case.tpm2b)

        def full(ak: Any = ak, case: Case = case, attest: bytes = attest) -> object:
            result = verify_quote(ak, attest, case.signature, nonce=nonce, pcrs=pcrs, eventlog=raw)
            return evaluate(policy, result.pcrs, result.eventlog)

        def first_sight(ak: Any = ak, case: Case = case, attest: bytes = attest) -> Any:
            return appraise(
                ak, attest, case.signature, nonce=nonce, pcrs=pcrs, policy=policy,
                policy_sha256=digest_of_policy, eventlog=raw,
            )  # fmt: skip

        judged = first_sight().judged

        def same_boot(
            ak: Any = ak, case: Case = case, attest: bytes = attest, judged: Any = judged
        ) -> Any:
            return appraise(
                ak, attest, case.signature, nonce=nonce, pcrs=pcrs, policy=policy,
                policy_sha256=digest_of_policy, eventlog=None, eventlog_sha256=log_sha256,
                judged=judged,
            )  # fmt: skip

        verdict: Any = full()
        assert str(verdict.status) == "Passed", verdict.messages
        assert first_sight().status == "Passed" and not first_sight().reused
        assert same_boot().status == "Passed" and same_boot().reused
        limit = rate(case.physical, args.budget)
        quote = rate(
            lambda ak=ak, case=case, attest=attest: verify_quote(
                ak, attest, case.signature, nonce=nonce, pcrs=pcrs
            ),
            args.budget,
        )
        with_log = rate(
            lambda ak=ak, case=case, attest=attest: verify_quote(
                ak, attest, case.signature, nonce=nonce, pcrs=pcrs, eventlog=raw
            ),
            args.budget,
        )
        with_policy = rate(full, args.budget)
        first = rate(first_sight, args.budget)
        steady = rate(same_boot, args.budget)
        keylime: Any = {}
        if not args.no_keylime and log_path is not None:
            keylime = run_keylime(case, attest, nonce, log_path, args.budget)
        elif not args.no_keylime:
            keylime = {"error": ["no corpus log: Keylime needs a real log for its policy"]}
        kq, kmb = keylime.get("quote"), keylime.get("quote+mb")
        print(
            f"{case.name:<12} {limit:>8,.0f}/s {quote:>6,.0f}/s {with_log:>6,.0f}/s "
            f"{with_policy:>6,.0f}/s {first:>10,.0f}/s {steady:>8,.0f}/s "
            f"{(f'{kq:,.0f}/s' if kq else 'n/a'):>14} {(f'{kmb:,.1f}/s' if kmb else 'n/a'):>12}"
        )
        if "error" in keylime or keylime.get("why"):
            print(f"  Keylime: {keylime.get('error') or keylime.get('why')}")
        results.append((case.name, limit, first, steady, kmb))
    print(
        "\ntargets: hostseal >= 50% of the signature limit, >= 20x Keylime (quote + measured "
        "boot, which parses the log at every attestation)"
    )
    for name, limit, first, steady, kmb in results:
        cases_ = (("same boot (steady state)", steady), ("first sight of a boot", first))
        for label, value in cases_:
            share = value / limit
            line = f"  {name}, {label}: {share:.0%} of the limit"
            line += f" ({'met' if share >= 0.5 else 'NOT met'})"
            if kmb:
                times = value / kmb
                line += f", {times:,.0f}x Keylime ({'met' if times >= 20 else 'NOT met'})"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
