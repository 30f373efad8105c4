"""``hostseal server``: run the attestation service, manage its tokens, find its CA."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import click

from hostseal.cli._common import echo_json, json_option, rich_console, rich_table
from hostseal.client.defaults import DEFAULT_SERVER_DATA
from hostseal.errors import HostsealError

#: uvicorn's exit code when the server could not start (it has already logged why)
_UVICORN_STARTUP_FAILURE = 3

_data_dir = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The server's data directory. Environment: HOSTSEAL_SERVER_DATA; "
    f"default {DEFAULT_SERVER_DATA}.",
)
_db = click.option(
    "--db",
    "database_url",
    metavar="URL",
    help="Database URL (SQLAlchemy). Environment: HOSTSEAL_SERVER_DB; default a SQLite file "
    "in the data directory.",
)


@click.group()
def server() -> None:
    """The attestation service: inventory, attestation, alarms, recovery-key escrow."""


@server.command("run")
@_data_dir
@_db
@click.option(
    "--bind",
    metavar="HOST:PORT",
    help="Address to listen on. Environment: HOSTSEAL_SERVER_BIND; default 127.0.0.1:8443.",
)
@click.option(
    "--ek-policy",
    type=click.Choice(["approve", "require-chain"]),
    help="Hosts whose EK has no trusted vendor chain: wait for approval (approve, the default) "
    "or are refused (require-chain). Environment: HOSTSEAL_SERVER_EK_POLICY.",
)
@click.option(
    "--tls-name",
    "tls_names",
    multiple=True,
    metavar="NAME",
    help="Extra name (DNS or IP) for the generated server certificate; repeatable.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def run(
    data_dir: Path | None,
    database_url: str | None,
    bind: str | None,
    ek_policy: str | None,
    tls_names: tuple[str, ...],
    log_level: str,
) -> None:
    """Serve the REST API over TLS. At first start the data directory gets its database, the
    escrow server key (server.key, mode 0600) and a CA plus server certificate (tls/)."""
    from hostseal.server.localadmin import serve
    from hostseal.server.settings import ServerSettings, parse_bind

    if bind is not None:
        parse_bind(bind)
    base = ServerSettings.from_env()
    settings = base.with_overrides(
        data_dir=data_dir,
        database_url=database_url,
        bind=bind,
        ek_policy=ek_policy,
        tls_names=(*base.tls_names, *tls_names) if tls_names else None,
    )
    host, port = settings.bind_address
    with _data_dir_errors(settings.data_dir):
        _check_free(host, port)
        try:
            serve(settings, log_level=log_level)
        except SystemExit as exc:
            if exc.code != _UVICORN_STARTUP_FAILURE:
                raise
            raise HostsealError(
                f"The server could not start listening on {host}:{port} (the log above says why).",
                "Fix what the log names, or give another address with --bind HOST:PORT "
                "(or HOSTSEAL_SERVER_BIND).",
            ) from None


def _check_free(host: str, port: int) -> None:
    """Refuse to start when another process already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise HostsealError(
                    f"Port {port} on {host} is already in use by another process.",
                    f"Give another address with --bind HOST:PORT (or HOSTSEAL_SERVER_BIND), or "
                    f"stop the process listening on port {port} (ss -ltnp 'sport = :{port}' "
                    "names it).",
                ) from None
            if err.errno == errno.EACCES:
                raise HostsealError(
                    f"Not allowed to listen on {host}:{port} (ports below 1024 need root or "
                    "CAP_NET_BIND_SERVICE).",
                    "Give a port from 1024 up with --bind HOST:PORT (or HOSTSEAL_SERVER_BIND).",
                ) from None
            raise HostsealError(
                f"Cannot listen on {host}:{port}: {err.strerror}.",
                "Give an address of this machine with --bind HOST:PORT (or "
                "HOSTSEAL_SERVER_BIND), for example 127.0.0.1:8443 or 0.0.0.0:8443.",
            ) from None


@contextlib.contextmanager
def _data_dir_errors(data_dir: Path) -> Iterator[None]:
    """Turn a failure to create, read or write the data directory into an error with a
    remedy (instead of a traceback)."""
    try:
        yield
    except OSError as err:
        where = Path(err.filename) if err.filename else None
        if where is None or not (where == data_dir or data_dir in where.parents):
            raise
        raise HostsealError(
            f"Cannot use the server's data directory {data_dir}: {err.strerror} ({where}).",
            "Give a directory the server's user can create and write with --data-dir DIR "
            "(or HOSTSEAL_SERVER_DATA).",
        ) from None


@server.group("token")
def token() -> None:
    """API tokens (viewer, operator, admin); works on the data directory, no server needed."""


@token.command("create")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin", "metrics"]),
    required=True,
    help="The role (metrics: reads /metrics and nothing else, for Prometheus).",
)
@click.option("--name", required=True, help="Who holds the token (unique among active tokens).")
@_data_dir
@_db
@json_option
def token_create(
    role: str, name: str, data_dir: Path | None, database_url: str | None, as_json: bool
) -> None:
    """Create a token and print it once: it is stored only as a hash."""
    from hostseal.server.datadir import require_existing
    from hostseal.server.localadmin import create_token
    from hostseal.server.settings import ServerSettings

    settings = ServerSettings.from_env().with_overrides(
        data_dir=data_dir, database_url=database_url
    )
    require_existing(settings.data_dir)  # only ``server run`` creates it
    with _data_dir_errors(settings.data_dir):
        value = create_token(settings, role=role, name=name)
    if as_json:
        echo_json({"name": name, "role": role, "token": value})
        return
    click.echo(value)
    click.echo(
        f"Token {name!r} ({role}) created. It is shown only now: give it to its holder, who "
        "sets HOSTSEAL_TOKEN (or uses --token-file).",
        err=True,
    )


@token.command("list")
@_data_dir
@_db
@json_option
def token_list(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """The tokens (names and roles; never the tokens themselves)."""
    from hostseal.server.datadir import require_existing
    from hostseal.server.localadmin import list_tokens
    from hostseal.server.settings import ServerSettings

    settings = ServerSettings.from_env().with_overrides(
        data_dir=data_dir, database_url=database_url
    )
    require_existing(settings.data_dir)
    with _data_dir_errors(settings.data_dir):
        rows = list_tokens(settings)
    if as_json:
        echo_json(rows)
        return
    table = rich_table("Name", "Role", "Created", "Revoked")
    for row in rows:
        table.add_row(row["name"], row["role"], row["created_at"], row["revoked_at"] or "")
    rich_console().print(table)


@token.command("revoke")
@click.argument("name")
@_data_dir
@_db
def token_revoke(name: str, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke the active token called NAME."""
    from hostseal.server.datadir import require_existing
    from hostseal.server.localadmin import revoke_token
    from hostseal.server.settings import ServerSettings

    settings = ServerSettings.from_env().with_overrides(
        data_dir=data_dir, database_url=database_url
    )
    require_existing(settings.data_dir)
    with _data_dir_errors(settings.data_dir):
        revoke_token(settings, name)
    click.echo(f"Token {name!r} revoked.")


@server.command("instances")
@_data_dir
@_db
@json_option
def instances_cmd(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """The server instances sharing the database (alive, not-responding, stopped) and who ran
    each scheduled job last; reads the database, no server needed."""
    from hostseal.server.datadir import require_existing
    from hostseal.server.instances import read_database
    from hostseal.server.settings import ServerSettings

    settings = ServerSettings.from_env().with_overrides(
        data_dir=data_dir, database_url=database_url
    )
    if settings.database_url is None:  # the SQLite file in the data directory
        require_existing(settings.data_dir)
    with _data_dir_errors(settings.data_dir):
        shown = read_database(settings.db_url)
    if as_json:
        echo_json(shown)
        return
    table = rich_table("Instance", "State", "Host", "PID", "Version", "Started", "Heartbeat")
    for row in shown["instances"]:
        table.add_row(
            row["name"],
            row["state"],
            row["hostname"],
            str(row["pid"]),
            row["version"],
            row["started_at"][:19],
            row["heartbeat_at"][:19],
        )
    jobs = rich_table("Job", "Next run", "Last run", "By", "Result")
    for job in shown["jobs"]:
        last = job["last_run_at"]
        jobs.add_row(
            job["name"],
            job["next_run_at"][:19],
            last[:19] if last else "never",
            job["last_instance"] or "",
            job["last_result"],
        )
    console = rich_console()
    console.print(table)
    console.print(jobs)


@server.command("ca-cert")
@_data_dir
def ca_cert(data_dir: Path | None) -> None:
    """Print the path of the CA certificate clients trust (HOSTSEAL_SERVER_CA / --ca)."""
    from hostseal.server.datadir import require_existing
    from hostseal.server.localadmin import ca_certificate
    from hostseal.server.settings import ServerSettings

    settings = ServerSettings.from_env().with_overrides(data_dir=data_dir)
    require_existing(settings.data_dir)
    with _data_dir_errors(settings.data_dir):
        path = ca_certificate(settings)
    if path is None:
        raise click.ClickException(
            "The server uses its own certificate (HOSTSEAL_SERVER_TLS_CERT) and no CA was "
            "given (HOSTSEAL_SERVER_TLS_CA)."
        )
    click.echo(str(path))


@server.command("install-unit")
@click.option(
    "--data-dir",
    "unit_data_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_SERVER_DATA,
    show_default=True,
)
@click.option("--bind", default="0.0.0.0:8443", show_default=True)
@click.option("--root", type=click.Path(path_type=Path), default=Path("/"), show_default=True)
def install_unit(unit_data_dir: Path, bind: str, root: Path) -> None:
    """Install and enable hostseal-server.service (systemd)."""
    import os
    import shutil
    import sys

    from hostseal import systemd

    exe = shutil.which("hostseal") or os.path.abspath(sys.argv[0])
    text = systemd.server_unit(exe, unit_data_dir, bind)
    for path in systemd.install(root, systemd.SERVER_UNIT, text, "multi-user.target"):
        click.echo(f"Wrote {path}")
