"""``hostseal demo``: the demonstrations on lab hosts.

``hostseal demo`` (the README's run command, what ``scripts/run`` starts) runs the attestation
service on SQLite with a lab fleet enrolled and attesting, until Ctrl-C
(:mod:`hostseal.cli.demo_fleet` over :class:`hostseal.demo.fleet.DemoFleet`).

``hostseal demo seal`` tells the sealed-configuration story on one lab host: it starts the host,
shows ``tpm info`` and the measured boot, seals a small configuration, reboots the host with
Secure Boot turned off, shows in plain words what changed, what the unlock says, and the way
back (the recovery key, or turning Secure Boot on again).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from hostseal.cli._common import rich_table, settings_of
from hostseal.errors import SecurityViolation

if TYPE_CHECKING:
    from rich.table import Table


def _boot_table(summary: dict[str, Any]) -> Table:
    table = rich_table(show_header=False, box=None, pad_edge=False)
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


def _status_line(status: dict[str, object]) -> str:
    """``hostseal config status`` in one line, in its words (true/false, no Python lists)."""
    pcrs = cast("list[int]", status["sealed_pcrs"])
    keys = cast("list[str]", status["recovery_key_ids"])
    sealed = f"{', '.join(map(str, pcrs))} ({status['pcr_bank']})" if pcrs else "none"
    return (
        f"Mode {status['mode']}, Require Secure Boot {str(status['require_secure_boot']).lower()}, "
        f"sealed to PCRs {sealed}, recovery key {', '.join(keys) or 'none'}"
    )


def _sample_config(root: Path) -> Path:
    """A small host configuration to seal: a libvirt secret and an SSH host key (fake)."""
    config = root / "etc"
    (config / "libvirt" / "secrets").mkdir(parents=True, exist_ok=True)
    (config / "libvirt" / "secrets" / "vm1.base64").write_text("c2VjcmV0LXBhc3NwaHJhc2U=\n")
    (config / "ssh").mkdir(exist_ok=True)
    (config / "ssh" / "ssh_host_ed25519_key").write_text("demo host key\n")
    return config


@click.group(invoke_without_command=True)
@click.option("--hosts", "size", default=3, show_default=True, help="How many lab hosts.")
@click.option("--interval", default=10, show_default=True, help="Seconds between attestations.")
@click.option(
    "--port",
    default=8443,
    show_default=True,
    help="Port of the service on 127.0.0.1 (0, or taken: any free one).",
)
@click.pass_context
def demo(ctx: click.Context, size: int, interval: int, port: int) -> None:
    """The attestation service on SQLite with lab hosts enrolled and attesting, until Ctrl-C.

    `hostseal demo seal` instead tells the sealed-configuration story on one lab host."""
    if ctx.invoked_subcommand is not None:
        return
    from hostseal.cli import demo_fleet

    demo_fleet.run(settings_of(ctx).lab_dir / "fleet-demo", size, interval, port)


@demo.command("seal")
@click.option("--name", default="demo", show_default=True, help="Name of the lab host.")
@click.option("--keep", is_flag=True, help="Leave the lab host running afterwards.")
@click.pass_context
def seal(ctx: click.Context, name: str, keep: bool) -> None:
    """Start a lab host, show its TPM and measured boot, seal a configuration, turn Secure Boot
    off and show what changed and what the unlock says, then recover."""
    from rich.console import Console
    from rich.rule import Rule

    from hostseal import hostinfo, measure
    from hostseal import lab as _lab
    from hostseal.cli import tpm as tpm_cli
    from hostseal.secureconfig import manager
    from hostseal.tpm import open_tpm

    lab_dir = settings_of(ctx).lab_dir
    console = Console()
    if any(h.name == name for h in _lab.list_hosts(lab_dir)):
        _lab.destroy(lab_dir, name)
    console.print(Rule(f"1. Lab host {name!r}: a software TPM and a simulated UEFI boot"))
    host = _lab.start(lab_dir, name)
    console.print(f"swtpm at {host.tcti}; event log {host.eventlog}")
    work = host.path / "demo"
    try:
        console.print(Rule("2. hostseal tpm info"))
        with open_tpm(host.tcti) as tpm:
            tpm_cli._print(hostinfo.collect(tpm, host.eventlog))
        console.print(Rule("3. The measured boot (hostseal eventlog summary)"))
        sealed_log = measure.parse_event_log(host.eventlog.read_bytes())
        console.print(_boot_table(measure.summarize(sealed_log)))

        console.print(Rule("4. Seal a host configuration (hostseal config save)"))
        hc = manager.HostContext(host.tcti, host.eventlog, work / "bootbank")
        saved = manager.save(hc, [_sample_config(work)])
        status = manager.status(hc)
        console.print(_status_line(status), markup=False, highlight=False)
        key = saved.created_recovery_key
        assert key is not None

        console.print(Rule("5. Reboot with Secure Boot turned off; what changed"))
        host = _lab.reboot(lab_dir, name, host.boot.with_changes(secure_boot=False))
        hc = manager.HostContext(host.tcti, host.eventlog, work / "bootbank")
        new_log = measure.parse_event_log(host.eventlog.read_bytes())
        for change in measure.diff_logs(sealed_log, new_log):
            console.print(f"  {change.message}")

        console.print(Rule("6. hostseal config unlock (exit code 3 on a real run)"))
        try:
            manager.unlock(hc, work / "unlocked-1", None)
        except SecurityViolation as err:
            console.print(f"[bold red]{err.message}[/bold red]")
            console.print(f"What to do: {err.remedy}")

        console.print(Rule("7. Unlock with the recovery key"))
        rescued = manager.unlock(hc, work / "unlocked-2", key.secret)
        for notice in rescued.notices:
            console.print(f"  {notice}")

        console.print(Rule("8. Turn Secure Boot back on: the sealed key is released again"))
        host = _lab.reboot(lab_dir, name, host.boot.with_changes(secure_boot=True))
        hc = manager.HostContext(host.tcti, host.eventlog, work / "bootbank")
        manager.unlock(hc, work / "unlocked-3", None)
        console.print(f"Configuration restored to {work / 'unlocked-3'} (in a real boot: a tmpfs).")
    finally:
        if not keep:
            _lab.destroy(lab_dir, name)
    if keep:
        console.print(f'The host is still running: eval "$(hostseal lab env {name})"')
