"""End to end: simulated agents against real ``hostseal server`` instances over HTTPS (TLS).

Each attestation is what a real agent does: POST /v1/attest/challenge, then POST
/v1/attest/evidence with a quote over the nonce (ECDSA P-256 AK, signed here: the rest of the
evidence, the lab firmware's event log and PCRs, is pre-computed, so no TPM is the bottleneck),
verified by the server (signature, nonce, PCR digest, event-log replay, a captured policy:
Passed) and stored (verdict, host state, alarms) before the answer. Agents retry with backoff.

Runs, on this machine (the load generator shares its CPUs):

1. throughput: ``--agents`` agents back to back for ``--seconds`` against one instance on
   SQLite, one on PostgreSQL, and two on one PostgreSQL (agents spread over both):
   attestations per second, p50/p99 latency (challenge to verdict);
2. a fleet: ``--fleet`` hosts (default 10,000) enrolled, attesting every 5 minutes, time
   compressed: the same request rate (10,000 / 300 s = 33/s) for ``--fleet-seconds`` (default
   120 s) against one instance on SQLite; every attestation must be Passed, none may fail.

PostgreSQL is a private server started here (``tests/scale/postgres.py``, fsync on). Targets:
>= 1,000 attestations/s with SQLite, more with two instances on PostgreSQL, the fleet run
without error. Run: ``.venv/bin/python bench/e2e_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from scale.fleet import Fleet, SimHost, closed_loop, make_hosts, open_loop  # noqa: E402
from scale.postgres import PostgresCluster, unavailable  # noqa: E402
from scale.service import Service, prepare  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(service: Service, hosts: list[SimHost], agents: int, seconds: float) -> str:
    pids = [i.pid for i in service.instances]
    used: list[float] = []

    async def go() -> tuple[Fleet, float]:
        fleet = Fleet(service.urls, service.ca, connections=agents)
        await closed_loop(fleet, hosts, concurrency=agents, duration=2, alternate=False)  # warm
        fleet.outcome = type(fleet.outcome)()
        used.extend(-cpu_seconds(pid) for pid in pids)
        used.append(-time.process_time())
        took = await closed_loop(
            fleet, hosts, concurrency=agents, duration=seconds, alternate=False
        )
        for n, pid in enumerate(pids):
            used[n] += cpu_seconds(pid)
        used[-1] += time.process_time()
        await fleet.close()
        return fleet, took

    fleet, took = asyncio.run(go())
    out = fleet.outcome
    server_ms = sum(used[:-1]) / max(1, out.accepted) * 1000
    client_ms = used[-1] / max(1, out.accepted) * 1000
    return (
        f"{out.accepted / took:8,.0f} attestations/s  p50 {out.percentile(50) * 1000:6.1f} ms  "
        f"p99 {out.percentile(99) * 1000:6.1f} ms  ({out.accepted:,} in {took:.0f} s, "
        f"{out.failed} failed, {out.retries} retries; CPU per attestation: server "
        f"{server_ms:.1f} ms, load generator {client_ms:.1f} ms)"
    )


def sqlite_url(data: Path) -> str:
    return f"sqlite:///{data / 'hostseal.db'}"


def run_throughput(args: argparse.Namespace, root: Path, pg: PostgresCluster | None) -> None:
    hosts = make_hosts(args.hosts)
    setups: list[tuple[str, str | None, int]] = [("1 instance, SQLite", None, 1)]
    if pg is not None:
        setups += [("1 instance, PostgreSQL", "pg1", 1), ("2 instances, PostgreSQL", "pg2", 2)]
    for label, database, count in setups:
        data = root / f"tp-{database or 'sqlite'}"
        url = pg.create_database(database) if pg is not None and database else None
        service = Service(data, url, count).start()
        try:
            prepare(service, hosts, url or sqlite_url(data))
            print(
                f"{label:<26} {throughput(service, hosts, args.agents, args.seconds)}", flush=True
            )
        finally:
            service.close()
        for host in hosts:
            host.token = ""


def run_fleet(args: argparse.Namespace, root: Path) -> None:
    rate = args.fleet / 300
    started = time.perf_counter()
    hosts = make_hosts(args.fleet, prefix="fleet")
    data = root / "fleet"
    service = Service(data, None, 1).start()
    try:
        prepare(service, hosts, sqlite_url(data))
        setup = time.perf_counter() - started

        async def go() -> tuple[Fleet, float, int]:
            fleet = Fleet(service.urls, service.ca, connections=128)
            took, begun = await open_loop(fleet, hosts, rate=rate, duration=args.fleet_seconds)
            await fleet.close()
            return fleet, took, begun

        fleet, took, begun = asyncio.run(go())
    finally:
        service.close()
    out = fleet.outcome
    errors = ", ".join(f"{k}: {v}" for k, v in out.errors.items()) or "none"
    print(
        f"fleet: {args.fleet:,} hosts enrolled ({setup:.0f} s), attesting every 300 s compressed "
        "to "
        f"{rate:.1f}/s for {took:.0f} s: {out.accepted:,} of {begun:,} attestations Passed, "
        f"{out.failed} failed, {out.retries} retries, p50 {out.percentile(50) * 1000:.1f} ms, "
        f"p99 {out.percentile(99) * 1000:.1f} ms; errors: {errors}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500, help="hosts in the throughput runs")
    parser.add_argument("--agents", type=int, default=64, help="concurrent agents")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fleet", type=int, default=10_000)
    parser.add_argument("--fleet-seconds", type=float, default=120)
    parser.add_argument("--no-fleet", action="store_true")
    parser.add_argument("--only-fleet", action="store_true", help="skip the throughput runs")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="100 hosts, 5 s, a 1,000-host fleet")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.seconds, args.fleet, args.fleet_seconds = 100, 5, 1000, 20
    print(f"{os.cpu_count()} CPUs shared by the server(s), PostgreSQL and the load generator\n")
    with tempfile.TemporaryDirectory(prefix="hostseal-e2e-") as tmp:
        pg = None
        if not args.no_postgres and not args.only_fleet:
            why = unavailable()
            if why:
                print(f"PostgreSQL runs skipped: {why}")
            else:
                pg = PostgresCluster(durable=True).init()
        try:
            if not args.only_fleet:
                run_throughput(args, Path(tmp), pg)
        finally:
            if pg is not None:
                pg.close()
        if not args.no_fleet:
            run_fleet(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
