"""``hostseal eventlog``: read measured-boot event logs (TCG PC Client, binary).

FILE is the binary log, e.g. /sys/kernel/security/tpm0/binary_bios_measurements, or ``-`` for
standard input.
"""

from __future__ import annotations

from typing import IO, Any

import click

from hostseal import measure
from hostseal.cli._common import echo_json, json_option, rich_console, rich_table
from hostseal.measure.decode import count_text

_LOG_FILE = click.File("rb")


def _load(stream: IO[bytes]) -> measure.EventLog:
    return measure.parse_event_log(stream.read())


def _secure_boot(log: measure.EventLog) -> bool | None:
    """Secure Boot for display: an empty SecureBoot variable reads as off; an unreadable one
    is reported on stderr and shown as unknown (null), so the PCRs still print."""
    try:
        return measure.secure_boot_state(log, allow_empty=True)
    except measure.EventLogError as err:
        click.echo(f"Warning: Secure Boot state unknown: {err.message}", err=True)
        return None


def _state(value: bool | None) -> str:
    return {True: "enabled", False: "disabled", None: "not recorded"}[value]


@click.group()
def eventlog() -> None:
    """Measured-boot event logs: list events, replay PCRs, explain what changed between boots.

    FILE is a binary TCG event log (/sys/kernel/security/tpm0/binary_bios_measurements), or -
    to read standard input. Both the crypto-agile (TPM 2.0) and the legacy SHA-1 format are read.
    """


@eventlog.command("show")
@click.argument("file", type=_LOG_FILE)
@json_option
def show(file: IO[bytes], as_json: bool) -> None:
    """List the events: index, PCR, type, digests and what each event records."""
    log = _load(file)
    if as_json:
        echo_json(
            {
                "format": log.format,
                "banks": list(log.banks),
                "events": [_event_json(e) for e in log.events],
            }
        )
        return
    from rich.text import Text

    banks = ", ".join(log.banks)
    table = rich_table(title=f"{len(log.events)} events, {log.format}, banks {banks}")
    table.add_column("#", justify="right")
    table.add_column("PCR", justify="right")
    table.add_column("Type")
    table.add_column("Digests", no_wrap=True)
    table.add_column("Event")
    for event in log.events:
        digests = "\n".join(f"{bank} {d.hex()[:12]}…" for bank, d in event.digests.items())
        table.add_row(
            str(event.index),
            str(event.pcr),
            event.type_name,
            digests,
            Text(measure.describe(event)),  # plain text: no rich markup from the log
        )
    rich_console().print(table)


def _event_json(event: measure.Event) -> dict[str, Any]:
    return {
        "index": event.index,
        "pcr": event.pcr,
        "type": event.event_type,
        "type_name": event.type_name,
        "digests": {bank: d.hex() for bank, d in event.digests.items()},
        "description": measure.describe(event),
        "data": event.data.hex(),
        # verified | unverified | forged: whether the digests cover the data (docs/eventlog.md)
        "data_status": measure.binding(event).status,
    }


@eventlog.command("replay")
@click.argument("file", type=_LOG_FILE)
@json_option
def replay(file: IO[bytes], as_json: bool) -> None:
    """The PCR values the log leads to, per bank, and the Secure Boot state it records.

    JSON: {"banks": {"sha256": {"0": "<hex>", ...}, ...}, "events": N, "secure_boot":
    true|false|null}; null when the log has no (readable) SecureBoot measurement.
    """
    log = _load(file)
    banks = measure.replay(log)
    secure_boot = _secure_boot(log)
    if as_json:
        echo_json(
            {
                "banks": {
                    bank: {str(pcr): value.hex() for pcr, value in pcrs.items()}
                    for bank, pcrs in banks.items()
                },
                "events": len(log.events),
                "secure_boot": secure_boot,
            }
        )
        return
    console = rich_console()
    for bank, pcrs in banks.items():
        table = rich_table(title=f"{bank} PCRs")
        table.add_column("PCR", justify="right")
        table.add_column("Value", no_wrap=True)
        for pcr, value in pcrs.items():
            table.add_row(str(pcr), value.hex())
        console.print(table)
    console.print(f"Events: {len(log.events)}")
    console.print(f"Secure Boot: {_state(secure_boot)}")


@eventlog.command("diff")
@click.argument("old", type=_LOG_FILE)
@click.argument("new", type=_LOG_FILE)
@json_option
@click.pass_context
def diff(ctx: click.Context, old: IO[bytes], new: IO[bytes], as_json: bool) -> None:
    """Explain how boot NEW differs from boot OLD (e.g. the log saved at seal time), PCR by PCR.

    Exit code 0 when the logs record the same boot, 1 when they differ (as diff(1)); an
    unreadable log is an error, which also exits 1 but prints "Error:" on stderr (with --json,
    an object with "error" instead of "same").

    JSON: {"same": true|false, "changes": [{"pcr", "kind", "message", "old_events",
    "new_events"}, ...]}.
    """
    changes = measure.diff_logs(_load(old), _load(new))
    if as_json:
        echo_json({"same": not changes, "changes": [c.to_dict() for c in changes]})
    elif not changes:
        click.echo("The two logs record the same boot.")
    else:
        for change in changes:
            click.echo(f"{change.message} [{change.kind}]")
    if changes:
        ctx.exit(1)


@eventlog.command("summary")
@click.argument("file", type=_LOG_FILE)
@json_option
def summary(file: IO[bytes], as_json: bool) -> None:
    """Secure Boot, boot applications, kernel command line, firmware version and sha256 PCRs."""
    data = measure.summarize(_load(file))
    if as_json:
        echo_json(data)
        return
    click.echo(f"Format: {data['format']}, banks {', '.join(data['banks'])}")
    click.echo(f"Events: {data['events']}")
    click.echo(f"Secure Boot: {_state(data['secure_boot'])}")
    for name, db in data["secure_boot_databases"].items():
        certificates = count_text(db["certificates"], "certificate")
        click.echo(f"  {name}: {certificates}, {count_text(db['hashes'], 'hash')}")
    click.echo(f"Firmware version: {data['firmware_version'] or 'not recorded'}")
    for app in data["boot_applications"]:
        click.echo(f"Boot application (PCR {app['pcr']}): {app['path']} (path unverified)")
    cmdline = {
        "forged": "FORGED: the event data does not match its measurement",
        "unverified": "unverified: its digest is not over the text",
    }.get(data["kernel_cmdline_status"] or "", data["kernel_cmdline"] or "not recorded")
    click.echo(f"Kernel command line: {cmdline}")
    for warning in data["warnings"]:
        click.echo(f"Warning: {warning}", err=True)
