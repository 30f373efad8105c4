"""``hostseal demo``: the README's run command. Starts the service and a lab fleet, says where
to look and how to log in, then shows each host's status as it changes, until interrupted."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from hostseal.demo.fleet import DemoFleet
from hostseal.errors import HostsealError


class _Stop(Exception):
    pass


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run(root: Path, size: int, interval: int, port: int) -> None:
    console = Console()
    fleet = DemoFleet(root, size=size, interval=interval, port=port)
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        console.print(f"Starting the attestation service and {size} lab hosts in {root} ...")
        fleet.start()
        _instructions(console, fleet)
        seen: dict[str, tuple[str, str]] = {}
        announced = False
        while True:
            try:
                hosts = fleet.hosts()
            except HostsealError as err:
                console.print(f"[yellow]{err.message}[/yellow]")
                hosts = []
            for h in hosts:
                now = (str(h["status"]), str(h.get("message") or ""))
                if seen.get(h["name"]) != now:
                    seen[h["name"]] = now
                    console.print(
                        f"{time.strftime('%H:%M:%S')}  {h['name']}: {now[0]}"
                        + (f" — {now[1]}" if now[1] else "")
                    )
            all_passed = len(hosts) == size and all(s == "passed" for s, _ in seen.values())
            if all_passed and not announced:
                console.print(f"All {size} hosts Passed.")
                announced = True
            time.sleep(2)
    except _Stop:
        console.print("Stopping the fleet ...")
    finally:
        fleet.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.print("Stopped.")


def _instructions(console: Console, fleet: DemoFleet) -> None:
    table = Table(title="hostseal attestation service", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Dashboard", f"{fleet.url}/ui/ (log in with a token below; trust the CA)")
    table.add_row("API", f"{fleet.url}/v1 (OpenAPI: {fleet.url}/v1/openapi.json)")
    table.add_row("CA certificate", str(fleet.ca))
    for role, token in fleet.tokens.items():
        table.add_row(f"{role} token", token)
    table.add_row("lab hosts", ", ".join(fleet.names) + f" (HOSTSEAL_LAB_DIR={fleet.lab_dir})")
    console.print(table)
    console.print(
        "In another shell:\n"
        f"  export HOSTSEAL_SERVER={fleet.url} HOSTSEAL_SERVER_CA={fleet.ca}\n"
        f"  export HOSTSEAL_TOKEN={fleet.tokens['operator']}\n"
        "  .venv/bin/hostseal host list\n"
        f"  HOSTSEAL_LAB_DIR={fleet.lab_dir} .venv/bin/hostseal lab reboot {fleet.names[-1]} "
        "--secure-boot off   # watch it turn Failed\n"
        "  .venv/bin/hostseal alarm list\n"
        "Press Ctrl-C to stop."
    )
