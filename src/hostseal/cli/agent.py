"""``hostseal agent``: the host side of attestation."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import click

from hostseal.agent.state import default_state_dir
from hostseal.cli._common import echo_json, json_option, settings_of
from hostseal.client.transport import ALLOW_PLAIN_HTTP_ENV, ALLOW_PLAIN_HTTP_FLAG, check_server_url


@click.group()
def agent() -> None:
    """Enrol this host with the attestation service and attest (no inbound port needed)."""


@agent.command()
@click.option(
    "--server",
    envvar="HOSTSEAL_SERVER",
    required=True,
    help="The service's URL, e.g. https://attest.example:8443 (HOSTSEAL_SERVER).",
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="HOSTSEAL_SERVER_CA",
    help="CA certificate of the service (HOSTSEAL_SERVER_CA).",
)
@click.option(
    "--name",
    default=socket.gethostname,
    show_default="the host name",
    help="The name this host enrols under.",
)
@click.option(
    "--interval", type=float, default=300.0, show_default=True, help="Seconds between attestations."
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Where the agent keeps its AK and token (HOSTSEAL_AGENT_DIR; default "
    "/var/lib/hostseal/agent).",
)
@click.option(
    "--bootbank",
    type=click.Path(path_type=Path),
    help="The sealed configuration to report and escrow (HOSTSEAL_BOOTBANK).",
)
@click.option("--eventlog", type=click.Path(path_type=Path), help="HOSTSEAL_EVENTLOG.")
@click.option(
    "--once",
    is_flag=True,
    help="Attest once and exit; exit 1 if that fails or the verdict is Failed.",
)
@click.option(
    "--escrow/--no-escrow",
    default=True,
    show_default=True,
    help="Upload the recovery keys to the service (escrow) when they change.",
)
@click.option(
    "--enrolment-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="HOSTSEAL_ENROLMENT_TOKEN_FILE",
    help="File holding an enrolment token, for a server that enrols only with one "
    "(HOSTSEAL_SERVER_ENROLMENT=token). Environment: HOSTSEAL_ENROLMENT_TOKEN_FILE.",
)
@click.option(
    ALLOW_PLAIN_HTTP_FLAG,
    "allow_plain_http",
    is_flag=True,
    help="Development only: allow http:// to a server on this machine (127.0.0.0/8, ::1, "
    f"localhost). Environment: {ALLOW_PLAIN_HTTP_ENV}=loopback.",
)
@json_option
@click.pass_context
def run(
    ctx: click.Context,
    server: str,
    ca: Path | None,
    name: str,
    interval: float,
    state_dir: Path | None,
    bootbank: Path | None,
    eventlog: Path | None,
    once: bool,
    escrow: bool,
    enrolment_token_file: Path | None,
    allow_plain_http: bool,
    as_json: bool,
) -> None:
    """Enrol (first time), then attest now and every --interval seconds, escrowing recovery
    keys when they change. A rebooted host attests again by itself."""
    from hostseal.agent import Agent, AgentConfig  # the HTTP client and the TPM stack

    s = settings_of(ctx).with_overrides(bootbank=bootbank, eventlog=eventlog)
    config = AgentConfig(
        name=name,
        server=server,
        ca=ca,
        tcti=s.tcti,
        eventlog=s.eventlog,
        bootbank=s.bootbank,
        state_dir=state_dir or default_state_dir(),
        interval=interval,
        escrow=escrow,
        allow_plain_http_loopback=allow_plain_http,
        enrolment_token_file=enrolment_token_file,
    )
    the_agent = Agent(config)
    if once:
        outcome = the_agent.attest_once()
        if as_json:
            echo_json(
                {
                    "status": outcome.status,
                    "messages": outcome.messages,
                    "escrowed": outcome.escrowed,
                    "problems": [p.to_dict() for p in outcome.problems],
                }
            )
        else:
            click.echo(f"{name}: {outcome.status}")
            for message in outcome.messages:
                click.echo(f"  {message}")
            for problem in outcome.problems:
                click.echo(f"Problem: {problem.message}", err=True)
                click.echo(f"What to do: {problem.remedy}", err=True)
        if outcome.status == "Failed":
            ctx.exit(1)  # README "Exit codes": the attestation verdict is Failed
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    the_agent.run()


@agent.command("install-unit")
@click.option("--server", envvar="HOSTSEAL_SERVER", required=True, help="The service's URL.")
@click.option(
    "--ca",
    type=click.Path(path_type=Path),
    envvar="HOSTSEAL_SERVER_CA",
    required=True,
    help="CA certificate of the service.",
)
@click.option("--interval", type=int, default=300, show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=Path("/"), show_default=True)
def install_unit(server: str, ca: Path, interval: int, root: Path) -> None:
    """Install and enable hostseal-agent.service."""
    import os
    import shutil
    import sys

    from hostseal import systemd

    # the unit runs for real: https:// only, without the development allowance
    check_server_url(server, env={})
    exe = shutil.which("hostseal") or os.path.abspath(sys.argv[0])
    text = systemd.agent_unit(exe, server, ca, interval)
    for path in systemd.install(root, systemd.AGENT_UNIT, text, "multi-user.target"):
        click.echo(f"Wrote {path}")
