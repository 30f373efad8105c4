"""Shared pieces of the CLI: the per-invocation context and output helpers.

Start-up matters (a command on an emulated host pays ~20x what it pays here): a command module
imports at the top only what building the command tree needs (click, settings, small errors),
and everything else -- the HTTP client, the TPM stack, the service, rich -- inside the command
that uses it. ``tests/test_cli_startup.py`` holds the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from hostseal.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@dataclass
class AppContext:
    settings: Settings


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.find_object(AppContext)
    if obj is None:  # invoked without the root group (tests calling a sub-command directly)
        return Settings.from_env()
    return obj.settings


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def rich_console() -> Console:
    """A rich console for human output (rich is loaded by the first command that prints)."""
    from rich.console import Console

    return Console()


def rich_table(*headers: str, **options: Any) -> Table:
    """A rich table with these column headers and options (see :class:`rich.table.Table`)."""
    from rich.table import Table

    return Table(*headers, **options)


# -- settings flags that work before or after the sub-command ----------------------------------

#: The settings a group's flag hands down to every command under it (``hostseal --tcti X tpm
#: info`` and ``hostseal tpm info --tcti X``; ``hostseal config --bootbank X status`` and
#: ``hostseal config status --bootbank X``). main.py adds the flags to the sub-commands.
SHARED_SETTINGS = ("tcti", "bootbank", "eventlog")


def check_tcti(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``--tcti`` value that names a way to a TPM; a usage error (exit 2) otherwise."""
    if value is None:
        return None
    from hostseal.tpm.errors import TctiInvalid
    from hostseal.tpm.tcti import parse_tcti

    try:
        parse_tcti(value)
    except TctiInvalid as err:
        raise click.BadParameter(
            f"{err.message} Accepted forms: device:/dev/tpmrm0 (the host's TPM), "
            "swtpm:host=127.0.0.1,port=N (a software TPM), mssim:host=127.0.0.1,port=N.",
            ctx=ctx,
            param=param,
        ) from None
    return value


def shared_setting(template: click.Parameter) -> click.Option:
    """A copy of the group option ``template`` for a sub-command: it checks the value the same
    way and sets the same setting in the context the group made."""
    assert isinstance(template, click.Option) and template.name in SHARED_SETTINGS
    name = template.name
    check = check_tcti if name == "tcti" else None

    def apply(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if check is not None:
            value = check(ctx, param, value)
        obj = ctx.find_object(AppContext)
        if value is not None and obj is not None:
            obj.settings = obj.settings.with_overrides(**{name: value})

    return click.Option(
        template.opts,
        type=template.type,
        metavar=template.metavar,
        help=template.help,
        expose_value=False,
        callback=apply,
    )
