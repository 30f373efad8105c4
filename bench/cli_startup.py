"""How long ``hostseal`` takes to start, for this tree and a baseline tree, in the same run.

    git archive a3db80a | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    .venv/bin/python bench/cli_startup.py --baseline /tmp/old [--runs 5]

Each command runs in a fresh interpreter of this virtual environment with ``PYTHONPATH`` set to
the tree's ``src`` (so the baseline runs with the same dependencies); the tree's modules are
imported from source. ``tpm info --json`` runs against a lab host (swtpm) the benchmark starts
and stops. Prints the median wall time of each command per tree, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _time(src: Path, args: list[str], env: dict[str, str], runs: int) -> float:
    """Median seconds of ``hostseal ARGS`` with the package from ``src``."""
    run_env = {**env, "PYTHONPATH": str(src)}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "hostseal.cli", *args],
            env=run_env,
            capture_output=True,
            check=False,
        )
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(f"hostseal {' '.join(args)} failed: {done.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a tree to compare with")
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    opts = parser.parse_args()
    sys.path.insert(0, str(HERE / "src"))
    from hostseal import lab

    with tempfile.TemporaryDirectory(prefix="hostseal-bench-") as tmp:
        lab_dir = Path(tmp)
        host = lab.start(lab_dir, "bench")
        try:
            lab_env = {"HOSTSEAL_TCTI": host.tcti, "HOSTSEAL_EVENTLOG": str(host.eventlog)}
            env = {**os.environ, **lab_env}
            commands = [["--version"], ["--help"], ["tpm", "info", "--json"]]
            trees = {"this tree": HERE / "src", "baseline": opts.baseline.resolve() / "src"}
            print(f"{'command':<22} {'this tree':>10} {'baseline':>10} {'ratio':>7}")
            for args in commands:
                now, before = (_time(src, args, env, opts.runs) for src in trees.values())
                print(f"{' '.join(args):<22} {now:>9.3f}s {before:>9.3f}s {before / now:>6.1f}x")
        finally:
            lab.stop(lab_dir, "bench")


if __name__ == "__main__":
    main()
