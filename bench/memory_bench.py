"""Server memory per enrolled host: the RSS of one ``hostseal server run`` (SQLite, TLS) before and
after ``--hosts`` (default 10,000) hosts enrol through the API and each attests once.

The baseline is taken after a warm-up (a few hosts enrolled and attested, so every code path is
loaded); RSS is read from /proc/PID/status (VmRSS) after each phase. The server keeps no per-host
state in memory (hosts and verdicts are rows), so what grows is caches (parsed AKs) and the
allocator's high-water mark. Target: <= 50 KB per host.
Run: ``.venv/bin/python bench/memory_bench.py [--hosts N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from scale.fleet import Fleet, make_hosts  # noqa: E402
from scale.service import Service, prepare  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostseal-mem-") as tmp:
        data = Path(tmp) / "server"
        service = Service(data, None, 1).start()
        pid = service.instances[0].pid
        url = f"sqlite:///{data / 'hostseal.db'}"
        try:
            warm = make_hosts(20, prefix="warm")
            prepare(service, warm, url)
            time.sleep(1)
            base = rss_kb(pid)
            hosts = make_hosts(args.hosts)
            started = time.perf_counter()
            prepare(service, hosts, url)  # enrol all, approve, assign the policy
            enrolled = rss_kb(pid)

            async def attest_all() -> int:
                fleet = Fleet(service.urls, service.ca, connections=32)
                queue = list(enumerate(hosts))

                async def worker() -> None:
                    while queue:
                        n, host = queue.pop()
                        await fleet.safe_attest(host, n)

                await asyncio.gather(*(worker() for _ in range(32)))
                await fleet.close()
                return fleet.outcome.failed

            failed = asyncio.run(attest_all())
            took = time.perf_counter() - started
            attested = rss_kb(pid)
        finally:
            service.close()
    per_enrolled = (enrolled - base) * 1024 / args.hosts
    per_attested = (attested - base) * 1024 / args.hosts
    print(
        f"RSS after warm-up {base / 1024:.1f} MiB; with {args.hosts:,} hosts enrolled "
        f"{enrolled / 1024:.1f} MiB ({per_enrolled / 1024:.2f} KB/host); after each attested once "
        f"{attested / 1024:.1f} MiB ({per_attested / 1024:.2f} KB/host); {failed} failed; "
        f"{took:.0f} s"
    )
    worst = max(per_enrolled, per_attested) / 1024
    print(f"target <= 50 KB/host: {'met' if worst <= 50 else 'NOT met'} ({worst:.2f} KB/host)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
