"""Unlock time of a sealed configuration, split into TPM time and hostseal's own time.

Target (issue: sealed host configuration): hostseal's own overhead under 50 ms for a 10 MB
configuration, on swtpm. "TPM time" is every call into the TPM layer during the unlock
(connecting, deriving the primary key, the salted session, PolicyPCR, Unseal); "own time" is the
rest: reading and checking state.tgz, the measured-boot check, AES-256-GCM, gunzip and writing
the files into a tmpfs.

Run: .venv/bin/python bench/unlock_bench.py [--runs N] [--megabytes M]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostseal import lab
from hostseal.secureconfig import _generation, manager


def make_config(root: Path, megabytes: int) -> None:
    """A configuration of ``megabytes`` MB: 200 files, half text-like, half random."""
    rng = random.Random(7)
    size = megabytes * 1024 * 1024 // 200
    for i in range(200):
        d = root / f"dir{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 2:
            data = rng.randbytes(size)
        else:
            words = [b"libvirt", b"network", b"bridge0", b"storage", b"pool", b"uuid", b"<xml>"]
            data = b" ".join(rng.choice(words) for _ in range(size // 6))[:size]
        (d / f"file{i}.conf").write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--megabytes", type=int, default=10)
    args = parser.parse_args()

    tpm_time = 0.0

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            nonlocal tpm_time
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                tpm_time += time.perf_counter() - start

        return wrapper

    with (
        tempfile.TemporaryDirectory() as work_s,
        tempfile.TemporaryDirectory(dir="/dev/shm") as shm_s,
    ):
        work, shm = Path(work_s), Path(shm_s)
        host = lab.start(work / "lab", "bench")
        try:
            config = work / "config"
            make_config(config, args.megabytes)
            ctx = manager.HostContext(host.tcti, host.eventlog, work / "bootbank")
            manager.save(ctx, [config])
            state_size = (work / "bootbank" / "state.tgz").stat().st_size
            _generation.open_tpm = timed(_generation.open_tpm)  # type: ignore[assignment]
            _generation.unseal = timed(_generation.unseal)  # type: ignore[assignment]
            totals, tpms = [], []
            for run in range(args.runs):
                target = shm / f"run{run}"
                tpm_time = 0.0
                start = time.perf_counter()
                manager.unlock(ctx, target)
                totals.append(time.perf_counter() - start)
                tpms.append(tpm_time)
                shutil.rmtree(target)
        finally:
            lab.destroy(work / "lab", "bench")
    total = statistics.median(totals) * 1000
    tpm = statistics.median(tpms) * 1000
    own = statistics.median(t - p for t, p in zip(totals, tpms, strict=True)) * 1000
    print(f"configuration: {args.megabytes} MB in 200 files; state.tgz {state_size / 1e6:.1f} MB")
    print(
        f"unlock, median of {args.runs}: total {total:.1f} ms = TPM {tpm:.1f} ms "
        f"+ hostseal's own {own:.1f} ms"
    )
    print(
        f"target: own time < 50 ms -> {'met' if own < 50 else 'NOT met'} "
        f"({own / 50:.2f} of the budget); cores: {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
