"""``hostseal tpm``: what the TPM and the platform are (``esxcli hardware trustedboot get``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from hostseal import hostinfo
from hostseal.cli._common import echo_json, json_option, rich_console, rich_table, settings_of
from hostseal.tpm import Problem, TpmUnavailable, parse_tcti

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@click.group()
def tpm() -> None:
    """The host's TPM."""


@tpm.command("info")
@click.option(
    "--eventlog",
    type=click.Path(path_type=Path),
    help="Measured-boot event log, for the Secure Boot state when efivars can't say. "
    "Environment: HOSTSEAL_EVENTLOG.",
)
@json_option
@click.pass_context
def info(ctx: click.Context, eventlog: Path | None, as_json: bool) -> None:
    """TPM present, version, manufacturer, firmware, kind, PCR banks, Secure Boot, DRTM, and
    every failed prerequisite with its remedy. Exit code 1 when a prerequisite fails (a missing
    TPM is one: "TPM present: no")."""
    from hostseal.tpm import open_tpm  # the TPM stack: loaded only when a TPM is asked

    settings = settings_of(ctx).with_overrides(eventlog=eventlog)
    tcti = parse_tcti(settings.tcti)
    report: hostinfo.HostInfo | hostinfo.NoTpm
    try:
        tpm_handle = open_tpm(tcti)
    except TpmUnavailable as err:
        report = hostinfo.without_tpm(tcti, err, settings.eventlog)
    else:
        with tpm_handle as t:
            report = hostinfo.collect(t, settings.eventlog)
    failed = any(p.severity == "fail" for p in report.problems)
    if as_json:
        echo_json(report.to_dict())
    elif isinstance(report, hostinfo.NoTpm):
        _print_no_tpm(report)
    else:
        _print(report)
    if failed:
        ctx.exit(1)


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def _table() -> Table:
    table = rich_table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    return table


def _print_no_tpm(report: hostinfo.NoTpm) -> None:
    console = rich_console()
    table = _table()
    sb = report.secure_boot
    table.add_row("TPM present", "no")
    table.add_row("Secure Boot", f"{_yes_no(sb.enabled)} (from {sb.source})")
    _platform_rows(table, report)
    console.print(table)
    _print_problems(console, report.problems)


def _print(report: hostinfo.HostInfo) -> None:
    data = report.to_dict()
    console = rich_console()
    table = _table()
    t = report.tpm
    sb = report.secure_boot
    table.add_row("TPM present", "yes")
    table.add_row("TPM version", t.family)
    table.add_row("Manufacturer", f"{t.vendor_id} — {t.vendor_name}")
    table.add_row("Vendor string", t.vendor_string)
    table.add_row("Firmware version", t.firmware_version)
    table.add_row("Specification", f"TPM 2.0 revision {data['spec_revision']}")
    table.add_row("Kind", t.kind)
    table.add_row("Active PCR banks", ", ".join(t.active_banks) or "none")
    table.add_row("SHA-256 bank active", _yes_no(t.sha256_active))
    table.add_row("Secure Boot", f"{_yes_no(sb.enabled)} (from {sb.source})")
    table.add_row("DRTM (TXT/SKINIT) launched", _yes_no(report.drtm_launched))
    table.add_row("Dictionary-attack lockout", _yes_no(report.in_lockout))
    _platform_rows(table, report)
    console.print(table)
    _print_problems(console, report.problems)


def _platform_rows(table: Table, report: hostinfo.HostInfo | hostinfo.NoTpm) -> None:
    """The event log, the TCTI and, for the host's own TPM, the kernel's TPM devices."""
    log = report.eventlog
    if log is not None:
        table.add_row("Event log", f"{log.detail}, {log.path}" if log.log else log.detail)
    table.add_row("TCTI", report.tcti)
    if report.tcti.startswith("device:"):
        table.add_row("TPM devices", ", ".join(report.devices) or "none in /dev")


def _print_problems(console: Console, problems: list[Problem]) -> None:
    for p in problems:
        label = "FAIL" if p.severity == "fail" else "WARN"
        console.print(f"[bold]{label}[/bold] {p.message}\n      What to do: {p.remedy}")
