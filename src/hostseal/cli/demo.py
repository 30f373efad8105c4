"""``hostseal demo``: the lab demo, hostseal's main job until the attestation server exists.

It starts a lab host, shows ``tpm info`` and the measured boot, reboots the host with Secure Boot
turned off and shows, in plain words, what changed in the measurements.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from hostseal import hostinfo, measure
from hostseal import lab as _lab
from hostseal.cli import tpm as tpm_cli
from hostseal.cli._common import settings_of
from hostseal.tpm import open_tpm


def _boot_table(summary: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    on_off = {True: "on", False: "off", None: "unknown"}
    table.add_row("Events", str(summary["events"]))
    table.add_row("Banks", ", ".join(summary["banks"]))
    table.add_row("Firmware", str(summary["firmware_version"]))
    table.add_row("Secure Boot", on_off[summary["secure_boot"]])
    for app in summary["boot_applications"]:
        table.add_row("Boot application", f"{app['path']}  sha256 {app['sha256'][:16]}…")
    table.add_row("Kernel command line", str(summary["kernel_cmdline"]))
    for bank, pcrs in summary["pcrs"].items():
        for pcr, value in pcrs.items():
            table.add_row(f"PCR {pcr} ({bank})", value)
    return table


@click.command()
@click.option("--name", default="demo", show_default=True, help="Name of the lab host.")
@click.option("--keep", is_flag=True, help="Leave the lab host running afterwards.")
@click.pass_context
def demo(ctx: click.Context, name: str, keep: bool) -> None:
    """Start a lab host, show its TPM and measured boot, turn Secure Boot off, show the diff."""
    lab_dir = settings_of(ctx).lab_dir
    console = Console()
    if any(h.name == name for h in _lab.list_hosts(lab_dir)):
        _lab.destroy(lab_dir, name)
    console.print(Rule(f"1. Lab host {name!r}: a software TPM and a simulated UEFI boot"))
    host = _lab.start(lab_dir, name)
    console.print(f"swtpm at {host.tcti}; event log {host.eventlog}")
    try:
        console.print(Rule("2. hostseal tpm info"))
        with open_tpm(host.tcti) as tpm:
            tpm_cli._print(hostinfo.collect(tpm, host.eventlog))
        console.print(Rule("3. The measured boot (hostseal eventlog replay)"))
        sealed_log = measure.parse_event_log(host.eventlog.read_bytes())
        console.print(_boot_table(measure.summarize(sealed_log)))
        console.print(Rule("4. Reboot with Secure Boot turned off"))
        host = _lab.reboot(lab_dir, name, host.boot.with_changes(secure_boot=False))
        new_log = measure.parse_event_log(host.eventlog.read_bytes())
        with open_tpm(host.tcti) as tpm:
            read = {"sha256": tpm.pcr_read("sha256", range(24))}
        mismatches = measure.compare_pcrs(new_log, read)
        console.print(
            "The new event log replays to the TPM's PCRs: "
            + ("yes" if not mismatches else f"NO ({len(mismatches)} mismatches)")
        )
        console.print(Rule("5. What changed (hostseal eventlog diff)"))
        for change in measure.diff_logs(sealed_log, new_log):
            console.print(f"  {change.message}")
    finally:
        if not keep:
            _lab.destroy(lab_dir, name)
    if keep:
        console.print(f'The host is still running: eval "$(hostseal lab env {name})"')
