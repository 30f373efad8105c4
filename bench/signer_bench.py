"""CPU per evidence request with N enrolled AKs: a good quote, a quote signed by a key of no host,
and a quote from another enrolled host (issue 12 item 6: "which host signed this?").

In process (the route's work, :func:`hostseal.server.http.api.agent.evidence_for`, on SQLite in a
temporary directory; no HTTP, so only the server's own work is counted): N hosts are enrolled
with their own ECDSA P-256 AKs (rows written directly), host1 and host2 enrol and attest with
software TPMs (``tests/server/_softtpm.py``), then each kind of request is timed with
``time.process_time`` (the whole process: the group-commit writer thread included) and its
quote signature checks are counted (``tests/server/_many.py``'s ``CountingVerifier``).

Run: ``.venv/bin/python bench/signer_bench.py [--hosts 1000,10000] [--budget SECONDS]``.
To measure another tree's server (the code before a change), point ``HOSTSEAL_BENCH_SRC`` at
its ``src`` directory.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, os.environ.get("HOSTSEAL_BENCH_SRC") or str(REPO / "src"))

from hostseal.server.clock import FixedClock  # noqa: E402
from hostseal.server.http.api.agent import challenge_for, evidence_for  # noqa: E402
from hostseal.server.http.api.schemas import EvidenceIn  # noqa: E402
from hostseal.server.settings import ServerSettings  # noqa: E402
from server._many import CountingVerifier, add_hosts  # noqa: E402
from server._softtpm import SoftTpm  # noqa: E402
from server.conftest import Server, make_server  # noqa: E402


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _approve(server: Server, name: str, tpm: SoftTpm) -> str:
    token: str = server.enrol(name, tpm)["agent_token"]
    response = server.api.post(
        f"/v1/hosts/{name}/approve", token=server.operator, json={"reason": "bench"}
    )
    assert response.status_code == 200, response.text
    return token


def _body(server: Server, token: str, tpm: SoftTpm, key: Any = None) -> EvidenceIn:
    """Evidence for a fresh challenge of ``token``'s host, quoted by ``tpm`` (with ``key``)."""
    challenge = challenge_for(server.ctx, f"Bearer {token}")
    attest, signature, values = tpm.quote(
        bytes.fromhex(challenge.nonce), list(challenge.pcrs), key=key
    )
    digest = hashlib.sha256(tpm.eventlog).hexdigest()
    named = challenge.eventlog_sha256 == digest
    return EvidenceIn(
        nonce=challenge.nonce,
        challenge=challenge.challenge,
        quote=_b64(attest),
        signature=_b64(signature),
        pcrs={b: {str(i): v.hex() for i, v in vs.items()} for b, vs in values.items()},
        eventlog=None if named else _b64(tpm.eventlog),
        eventlog_sha256=digest if named else None,
    )


def _measure(
    server: Server, token: str, make: Callable[[], EvidenceIn], budget: float, most: int
) -> tuple[float, float, str]:
    """CPU ms per request, signature checks per request, the answer (status or error)."""
    verifier = server.ctx.verifier
    assert isinstance(verifier, CountingVerifier)
    spent, count, checks, answer = 0.0, 0, 0, ""
    while count < most and (spent < budget or count < 3):
        body = make()
        before_checks = verifier.checks
        start = time.process_time()
        try:
            answer = evidence_for(server.ctx, f"Bearer {token}", body).status
        except Exception as exc:  # the refusal is the answer
            answer = type(exc).__name__
        spent += time.process_time() - start
        checks += verifier.checks - before_checks
        count += 1
        server.clock.advance(server.ctx.settings.nonce_lifetime / 100)
    return spent / count * 1000, checks / count, answer


def run(hosts: int, budget: float) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        clock = FixedClock()
        server = make_server(ServerSettings(data_dir=Path(tmp) / "server"), clock)
        try:
            tpm1, tpm2 = SoftTpm(), SoftTpm()
            token1, token2 = _approve(server, "host1", tpm1), _approve(server, "host2", tpm2)
            server.attest(token1, tpm1)
            server.attest(token2, tpm2)  # the server has seen host2's AK sign
            add_hosts(server.ctx, hosts, clock.now())
            server.ctx.verifier = CountingVerifier(server.ctx.settings.trust_store_dir)
            stranger = SoftTpm().ak
            cases = {
                "good quote": lambda: _body(server, token1, tpm1),
                "signed by no host's key": lambda: _body(server, token1, tpm1, key=stranger),
                "quote from another host": lambda: _body(server, token1, tpm2),
            }
            lines = []
            for label, make in cases.items():
                ms, checks, answer = _measure(server, token1, make, budget, 400)
                lines.append(
                    f"{hosts + 2:>7,} AKs  {label:<26} {ms:8.2f} ms CPU/request  "
                    f"{checks:8.1f} signature checks  ({answer})"
                )
            return lines
        finally:
            server.ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1000,10000", help="enrolled AKs, comma-separated")
    parser.add_argument("--budget", type=float, default=2.0, help="CPU seconds per case")
    args = parser.parse_args()
    source = os.environ.get("HOSTSEAL_BENCH_SRC") or "this tree"
    print(f"evidence requests, CPU per request (server code: {source})")
    for hosts in (int(h) for h in args.hosts.split(",")):
        for line in run(hosts, args.budget):
            print(line, flush=True)


if __name__ == "__main__":
    main()
