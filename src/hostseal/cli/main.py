"""Entry point of the ``hostseal`` command.

This is the one place where a :class:`~hostseal.errors.HostsealError` becomes a message on stderr
(or a JSON object on stdout with ``--json``) and an exit code.
"""

from __future__ import annotations

import os
import sys

import click

from hostseal import __version__
from hostseal.cli._common import SHARED_SETTINGS, AppContext, check_tcti, shared_setting
from hostseal.cli._filedefaults import default_map
from hostseal.errors import HostsealError
from hostseal.settings import Settings, load_config_file


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hostseal")
@click.option(
    "--tcti",
    metavar="TCTI",
    callback=check_tcti,
    help="The TPM to use: device:/dev/tpmrm0 (default) or swtpm:host=127.0.0.1,port=N. "
    "Environment: HOSTSEAL_TCTI.",
)
@click.pass_context
def cli(ctx: click.Context, tcti: str | None) -> None:
    """hostseal protects a hypervisor host's configuration with its TPM 2.0, proves what the
    host booted, and gives virtual machines their own TPMs.

    Settings and option defaults come from /etc/hostseal/hostseal.toml (or the file
    HOSTSEAL_CONFIG names); a flag beats an environment variable, which beats the file."""
    # flag > environment > file > default: the host settings through Settings, the command
    # options through click's default_map (which click puts below flags and envvars)
    file = load_config_file(os.environ)
    ctx.default_map = default_map(file, os.environ)
    ctx.obj = AppContext(Settings.from_env(os.environ, file).with_overrides(tcti=tcti))


def _register() -> None:
    from hostseal.cli import (
        admin,
        agent,
        config,
        demo,
        doctor,
        eventlog,
        keyprovider,
        lab,
        quote,
        server,
        tpm,
        vtpm,
    )

    cli.add_command(agent.agent)
    cli.add_command(config.config)
    cli.add_command(config.recovery)
    cli.add_command(demo.demo)
    cli.add_command(doctor.doctor)
    cli.add_command(tpm.tpm)
    cli.add_command(eventlog.eventlog)
    cli.add_command(lab.lab)
    cli.add_command(quote.quote)
    cli.add_command(server.server)
    for group in (admin.host, admin.alarm, admin.policy, admin.escrow, admin.token):
        cli.add_command(group)
    cli.add_command(vtpm.vtpm)
    cli.add_command(keyprovider.keyprovider)
    _share_settings(cli, ())


def _share_settings(command: click.Command, inherited: tuple[click.Parameter, ...]) -> None:
    """Give every command the settings flags of the groups above it (--tcti from ``hostseal``,
    --bootbank and --eventlog from ``config`` and ``recovery``), so that a flag works before
    and after the sub-command alike."""
    own = {p.name for p in command.params}
    command.params.extend(shared_setting(p) for p in inherited if p.name not in own)
    if isinstance(command, click.Group):
        handed = tuple(p for p in command.params if p.name in SHARED_SETTINGS)
        for sub in command.commands.values():
            _share_settings(sub, handed)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn hostseal's errors into a message and an exit code."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=argv, prog_name="hostseal", standalone_mode=False)
    except HostsealError as err:
        args = argv if argv is not None else sys.argv[1:]
        _report(err, as_json="--json" in args, command=_command_of(args))
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _command_of(args: list[str]) -> str | None:
    """The ``hostseal`` command (first word after the global flags) in ``args``."""
    rest = iter(args)
    for arg in rest:
        if arg == "--tcti":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _finding(err: HostsealError, command: str | None) -> tuple[str, str] | None:
    """The doctor's knowledge-base entry that explains ``err`` raised by ``command`` (id,
    title), if any."""
    try:
        from hostseal.doctor.knowledge import load_kb

        found = load_kb().for_error(err, command)
    except Exception:
        return None
    return (found.id, found.title) if found is not None else None


def _report(err: HostsealError, *, as_json: bool, command: str | None) -> None:
    finding = _finding(err, command)
    if as_json:
        import json

        data = err.to_dict()
        if finding is not None:
            data["finding"] = finding[0]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Error: {err.message}", err=True)
    if err.remedy:
        click.echo(f"What to do: {err.remedy}", err=True)
    if finding is not None:
        click.echo(f"Known issue: {finding[1]} (hostseal doctor finding {finding[0]})", err=True)
