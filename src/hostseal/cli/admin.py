"""``hostseal host|alarm|policy|escrow``: a thin client of the attestation service's REST API.

The server is ``--server URL`` or ``HOSTSEAL_SERVER`` (default ``https://127.0.0.1:8443``); the
token comes from ``HOSTSEAL_TOKEN`` or a file (``--token-file`` / ``HOSTSEAL_TOKEN_FILE``), never
from the command line; the CA certificate from ``--ca`` / ``HOSTSEAL_SERVER_CA``, else the local
server's ``<data dir>/tls/ca.pem`` when readable, else the system's trust store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from hostseal.cli._common import echo_json, json_option
from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write
from hostseal.server.client import DEFAULT_SERVER, Client, read_token, tls_verify

F = TypeVar("F", bound=Callable[..., Any])


def client_options(func: F) -> F:
    """``--server``, ``--token-file``, ``--ca``: where and how to reach the server."""
    func = click.option(
        "--ca",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="HOSTSEAL_SERVER_CA",
        help="CA certificate of the server. Environment: HOSTSEAL_SERVER_CA.",
    )(func)
    func = click.option(
        "--token-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="File holding the API token. Default: HOSTSEAL_TOKEN (or HOSTSEAL_TOKEN_FILE).",
    )(func)
    func = click.option(
        "--server",
        envvar="HOSTSEAL_SERVER",
        default=DEFAULT_SERVER,
        show_default=True,
        help="URL of the hostseal server. Environment: HOSTSEAL_SERVER.",
    )(func)
    return func


def _client(server: str, token_file: Path | None, ca: Path | None) -> Client:
    return Client(server, read_token(token_file), tls_verify(ca, server))


def _print_or_json(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        echo_json(data)
    else:
        human(data)


def _kv(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


# --- hosts -----------------------------------------------------------------------------------

_STATUS_STYLE = {"passed": "green", "failed": "bold red", "warning": "yellow"}


def _status(text: str) -> str:
    style = _STATUS_STYLE.get(text, "magenta")
    return f"[{style}]{text}[/{style}]"


def _hosts_table(hosts: list[dict[str, Any]]) -> None:
    table = Table("Host", "Status", "Message", "Last attested", "Policy", "Escrow", "Alarms")
    for h in hosts:
        table.add_row(
            h["name"],
            _status(h["status"]),
            h.get("message") or "",
            h.get("last_attested_at") or "never",
            h.get("policy") or "none",
            h["escrow"]["state"],
            str(len(h.get("alarms", []))),
        )
    Console().print(table)


def _host_detail(h: dict[str, Any]) -> None:
    config = h.get("secure_config") or {}
    escrow = h["escrow"]
    rows = [
        ("Host", h["name"]),
        ("Status", _status(h["status"])),
        ("Last verdict", h.get("last_verdict") or "none"),
        ("Messages", "\n".join(h.get("messages") or []) or "none"),
        ("Last attested", h.get("last_attested_at") or "never"),
        ("Reference policy", h.get("policy") or "none"),
        ("EK fingerprint", h["ek"]["fingerprint"]),
        ("EK certificate", "trusted chain" if h["ek"]["trusted_chain"] else "no trusted chain"),
        ("AK name", h["ak"]["name"]),
        ("Secure config", config.get("mode", "not reported")),
        (
            "Recovery keys",
            f"{escrow['matched']} of {escrow['reported']} escrowed ({escrow['state']})",
        ),
    ]
    if h["ek"].get("new_fingerprint"):
        rows.append(("New EK (TPM changed)", h["ek"]["new_fingerprint"]))
    _kv(rows)
    if h.get("verdicts"):
        table = Table("When", "Verdict", "Messages", title="Attestation history")
        for v in h["verdicts"][:20]:
            table.add_row(v["at"], v["status"], "\n".join(v["messages"]))
        Console().print(table)


@click.group()
def host() -> None:
    """Hosts known to the attestation service."""


@host.command("list")
@client_options
@json_option
def host_list(server: str, token_file: Path | None, ca: Path | None, as_json: bool) -> None:
    """Every host with its attestation status and message (viewer)."""
    data = _client(server, token_file, ca).call("GET", "/v1/hosts")
    _print_or_json(data, as_json, _hosts_table)


@host.command("show")
@click.argument("name")
@client_options
@json_option
def host_show(
    name: str, server: str, token_file: Path | None, ca: Path | None, as_json: bool
) -> None:
    """One host, with its verdict history (viewer)."""
    data = _client(server, token_file, ca).call("GET", f"/v1/hosts/{name}")
    _print_or_json(data, as_json, _host_detail)


def _host_action(action: str, past: str, doc: str) -> click.Command:
    @click.argument("name")
    @click.option("--reason", required=True, help="Why (kept in the audit log).")
    @client_options
    @json_option
    def command(
        name: str,
        reason: str,
        server: str,
        token_file: Path | None,
        ca: Path | None,
        as_json: bool,
    ) -> None:
        client = _client(server, token_file, ca)
        data = client.call("POST", f"/v1/hosts/{name}/{action}", body={"reason": reason})
        _print_or_json(data, as_json, lambda _: click.echo(f"Host {name} {past}."))

    command.__doc__ = doc
    return host.command(action)(command)


_host_action(
    "reconnect",
    "will be accepted with its new TPM at its next enrolment",
    "Accept the host's next enrolment with a new EK, after a TPM or system board replacement "
    "(operator; audited).",
)
_host_action(
    "approve",
    "approved",
    "Approve a host whose EK has no trusted vendor certificate chain (operator; audited).",
)


@host.command("remove")
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@client_options
@json_option
def host_remove(
    name: str, reason: str, server: str, token_file: Path | None, ca: Path | None, as_json: bool
) -> None:
    """Remove a host (operator; audited). Its escrowed recovery keys are kept."""
    data = _client(server, token_file, ca).call(
        "DELETE", f"/v1/hosts/{name}", params={"reason": reason}
    )
    _print_or_json(data, as_json, lambda _: click.echo(f"Host {name} removed."))


# --- alarms ----------------------------------------------------------------------------------


def _alarms_table(alarms: list[dict[str, Any]]) -> None:
    table = Table("Id", "Host", "Alarm", "State", "Raised", "Message")
    for a in alarms:
        table.add_row(str(a["id"]), a["host"], a["title"], a["state"], a["raised_at"], a["message"])
    Console().print(table)


@click.group()
def alarm() -> None:
    """Alarms: host TPM attestation, TPM encryption recovery key backup."""


@alarm.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include cleared alarms (history).")
@click.option("--host", "host_name", help="Only this host's alarms.")
@client_options
@json_option
def alarm_list(
    show_all: bool,
    host_name: str | None,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Alarms not cleared (viewer); --all for the history."""
    params = {} if show_all else {"state": "active"}
    if host_name:
        params["host"] = host_name
    data = _client(server, token_file, ca).call("GET", "/v1/alarms", params=params)
    _print_or_json(data, as_json, _alarms_table)


def _alarm_action(action: str, past: str, doc: str) -> None:
    @click.argument("alarm_id", type=int)
    @click.option("--comment", default="", help="A comment for the alarm's history.")
    @client_options
    @json_option
    def command(
        alarm_id: int,
        comment: str,
        server: str,
        token_file: Path | None,
        ca: Path | None,
        as_json: bool,
    ) -> None:
        client = _client(server, token_file, ca)
        data = client.call("POST", f"/v1/alarms/{alarm_id}/{action}", body={"comment": comment})
        _print_or_json(data, as_json, lambda _: click.echo(f"Alarm {alarm_id} {past}."))

    command.__doc__ = doc
    alarm.command(action)(command)


_alarm_action("ack", "acknowledged", "Acknowledge an alarm (operator).")
_alarm_action(
    "reset",
    "reset to green",
    "Reset an alarm to green (operator); refused while its condition still holds.",
)


# --- policies --------------------------------------------------------------------------------


def _policy_table(policies: list[dict[str, Any]]) -> None:
    table = Table("Policy", "Bank", "Quoted PCRs", "Hosts", "Updated", "By")
    for p in policies:
        table.add_row(
            p["name"],
            p["bank"],
            ",".join(str(i) for i in p["pcrs"]),
            ", ".join(p["hosts"]),
            p["updated_at"],
            p["updated_by"],
        )
    Console().print(table)


@click.group()
def policy() -> None:
    """Reference policies: what hosts must have booted to pass attestation."""


@policy.command("list")
@client_options
@json_option
def policy_list(server: str, token_file: Path | None, ca: Path | None, as_json: bool) -> None:
    """The reference policies and their hosts (viewer)."""
    data = _client(server, token_file, ca).call("GET", "/v1/policies")
    _print_or_json(data, as_json, _policy_table)


@policy.command("show")
@click.argument("name")
@client_options
@json_option
def policy_show(
    name: str, server: str, token_file: Path | None, ca: Path | None, as_json: bool
) -> None:
    """A policy's JSON document (viewer)."""
    data = _client(server, token_file, ca).call("GET", f"/v1/policies/{name}")
    if as_json:
        echo_json(data)
    else:
        click.echo(json.dumps(data["policy"], indent=2))


@policy.command("set")
@click.argument("name")
@click.argument("file", type=click.File("r"))
@client_options
@json_option
def policy_set(
    name: str,
    file: Any,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Create or replace policy NAME from a JSON FILE ('-' for stdin) (operator)."""
    try:
        document = json.load(file)
    except ValueError as exc:
        raise HostsealError(
            f"{file.name} is not JSON: {exc}.", "Give a reference policy JSON document."
        ) from exc
    data = _client(server, token_file, ca).call("PUT", f"/v1/policies/{name}", body=document)
    _print_or_json(data, as_json, lambda _: click.echo(f"Policy {name} saved."))


@policy.command("capture")
@click.argument("name")
@click.option("--host", "host_name", required=True, help="The known-good host to capture.")
@client_options
@json_option
def policy_capture(
    name: str,
    host_name: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Capture policy NAME from a known-good host's last verified evidence and assign it to
    that host (operator)."""
    data = _client(server, token_file, ca).call(
        "POST", "/v1/policies/capture", body={"name": name, "host": host_name}
    )
    _print_or_json(
        data,
        as_json,
        lambda d: click.echo(
            f"Policy {name} captured from {host_name} (quotes {d['bank']} PCRs "
            f"{','.join(str(i) for i in d['pcrs'])}) and assigned to it."
        ),
    )


@policy.command("assign")
@click.argument("name")
@click.argument("hosts", nargs=-1, required=True)
@client_options
@json_option
def policy_assign(
    name: str,
    hosts: tuple[str, ...],
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Assign policy NAME to HOSTS ('none' to unassign) (operator)."""
    client = _client(server, token_file, ca)
    target = None if name == "none" else name
    results = [client.call("PUT", f"/v1/hosts/{h}/policy", body={"policy": target}) for h in hosts]
    _print_or_json(
        results, as_json, lambda _: click.echo(f"Policy {name} assigned to {', '.join(hosts)}.")
    )


# --- escrow ----------------------------------------------------------------------------------


def _keys_table(data: dict[str, Any]) -> None:
    table = Table("Recovery ID", "Key", "Current", "Escrowed", title=f"Host {data['host']}")
    for k in data["keys"]:
        table.add_row(k["recovery_id"], k["key"], "yes" if k["current"] else "", k["escrowed_at"])
    Console().print(table)


@click.group()
def escrow() -> None:
    """Escrowed recovery keys (admin; every read is audited with its reason)."""


@escrow.command("get")
@click.argument("host_name", metavar="HOST")
@click.option("--reason", required=True, help="Why you read the keys (kept in the audit log).")
@client_options
@json_option
def escrow_get(
    host_name: str,
    reason: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Print HOST's escrowed recovery keys."""
    data = _client(server, token_file, ca).call(
        "GET", f"/v1/escrow/{host_name}", params={"reason": reason}
    )
    _print_or_json(data, as_json, _keys_table)


@escrow.command("export")
@click.option("--reason", required=True, help="Why you export the keys (kept in the audit log).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File to write (mode 0600).",
)
@client_options
def escrow_export(
    reason: str, out: Path, server: str, token_file: Path | None, ca: Path | None
) -> None:
    """Export every escrowed key as one JSON document (mode 0600)."""
    data = _client(server, token_file, ca).call("GET", "/v1/escrow", params={"reason": reason})
    atomic_write(out, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)
    keys = sum(len(h["keys"]) for h in data["hosts"])
    click.echo(f"{keys} recovery keys of {len(data['hosts'])} hosts written to {out}.")
