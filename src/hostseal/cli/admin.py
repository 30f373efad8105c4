"""``hostseal host|alarm|policy|escrow``: a thin client of the attestation service's REST API.

The server is ``--server URL`` or ``HOSTSEAL_SERVER`` (default: :mod:`hostseal.client.defaults`);
the token comes from ``HOSTSEAL_TOKEN`` or a file (``--token-file`` / ``HOSTSEAL_TOKEN_FILE``),
never from the command line; the CA certificate from ``--ca`` / ``HOSTSEAL_SERVER_CA``, else the
local server's CA when readable, else the system's trust store
(:func:`hostseal.client.http.tls_verify`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import click

from hostseal.cli._common import echo_json, json_option, rich_console, rich_table
from hostseal.client.defaults import DEFAULT_SERVER
from hostseal.client.transport import ALLOW_PLAIN_HTTP_ENV, ALLOW_PLAIN_HTTP_FLAG, check_server_url
from hostseal.errors import HostsealError
from hostseal.fsutil import atomic_write

if TYPE_CHECKING:
    from hostseal.client.http import Client

F = TypeVar("F", bound=Callable[..., Any])


_ALLOW_PLAIN_HTTP = "hostseal.allow_plain_http_loopback"


def _remember_allowance(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    ctx.meta[_ALLOW_PLAIN_HTTP] = value


def client_options(func: F) -> F:
    """``--server``, ``--token-file``, ``--ca`` (and the development-only
    ``--allow-plain-http-loopback``): where and how to reach the server."""
    func = click.option(
        ALLOW_PLAIN_HTTP_FLAG,
        is_flag=True,
        expose_value=False,
        callback=_remember_allowance,
        help="Development only: allow http:// to a server on this machine (127.0.0.0/8, ::1, "
        f"localhost). Environment: {ALLOW_PLAIN_HTTP_ENV}=loopback.",
    )(func)
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
    ctx = click.get_current_context(silent=True)
    allow = bool(ctx and ctx.meta.get(_ALLOW_PLAIN_HTTP))
    check_server_url(server, allow_plain_http_loopback=allow)  # before the token is read
    from hostseal.client.http import Client, read_token, tls_verify  # httpx: only when used

    return Client(
        server, read_token(token_file), tls_verify(ca, server), allow_plain_http_loopback=allow
    )


def _print_or_json(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        echo_json(data)
    else:
        human(data)


def _kv(rows: list[tuple[str, str]]) -> None:
    table = rich_table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    rich_console().print(table)


# --- hosts -----------------------------------------------------------------------------------

_STATUS_STYLE = {"passed": "green", "failed": "bold red", "warning": "yellow"}


def _status(text: str) -> str:
    style = _STATUS_STYLE.get(text, "magenta")
    return f"[{style}]{text}[/{style}]"


def _hosts_table(hosts: list[dict[str, Any]]) -> None:
    table = rich_table("Host", "Status", "Message", "Last attested", "Policy", "Escrow", "Alarms")
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
    rich_console().print(table)


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
        rows.append(("New EK (accepted)", h["ek"]["new_fingerprint"]))
    if h.get("removed"):
        removed = h["removed"]
        rows.append(("Removed", f"{removed['at']} by {removed['by']}: {removed['reason']}"))
    _kv(rows)
    _tpm_requests(h)
    if h.get("verdicts"):
        table = rich_table("When", "Verdict", "Messages", title="Attestation history")
        for v in h["verdicts"][:20]:
            table.add_row(v["at"], v["status"], "\n".join(v["messages"]))
        rich_console().print(table)


def _tpm_requests(h: dict[str, Any]) -> None:
    """Each TPM change request as a block: another TPM enrolled under this name."""
    for r in h.get("tpm_change_requests") or []:
        if r["trusted_chain"]:
            certificate = "trusted vendor chain" + (f" ({r['vendor']})" if r.get("vendor") else "")
        else:
            certificate = "present, no trusted chain" if r["certificate"] else "none sent"
        rich_console().print(
            f"\n[bold]TPM change request {r['id']}[/bold] ({r['state']}): another TPM enrolled "
            "under this name; the host is unchanged."
        )
        rows = [
            ("Enrolled EK", r["old_ek_fingerprint"]),
            ("New EK", r["new_ek_fingerprint"]),
            ("EK certificate", certificate),
            ("From address", r.get("address") or "unknown"),
            ("Requested", r["requested_at"]),
        ]
        if r["state"] == "open":
            rows.append(
                (
                    "Decide",
                    f"hostseal host accept-tpm {h['name']} --request {r['id']} --reason ...\n"
                    f"hostseal host reject-tpm {h['name']} --request {r['id']} --reason ...",
                )
            )
        else:
            rows.append(("Decided", f"{r['decided_at']} by {r['decided_by']}: {r['reason']}"))
        _kv(rows)


@click.group()
def host() -> None:
    """Hosts known to the attestation service."""


@host.command("list")
@click.option("--removed", is_flag=True, help="The removed hosts (kept with their history).")
@client_options
@json_option
def host_list(
    removed: bool, server: str, token_file: Path | None, ca: Path | None, as_json: bool
) -> None:
    """Every host with its attestation status and message (viewer)."""
    params = {"removed": "true"} if removed else None
    data = _client(server, token_file, ca).call("GET", "/v1/hosts", params=params)
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
    "will be accepted with any new TPM at its next enrolment (a TPM without a vendor "
    "certificate chain then waits for approval)",
    "Before a planned TPM or system board replacement: accept the host's next enrolment with "
    "any new EK (operator; audited). A TPM that already asked has a request: use accept-tpm.",
)


def _tpm_decision(decision: str, past: str, doc: str) -> click.Command:
    @click.argument("name")
    @click.option(
        "--request",
        "request_id",
        type=click.IntRange(1, 2**31 - 1),
        required=True,
        help="The request's ID (hostseal host show NAME).",
    )
    @click.option("--reason", required=True, help="Why (kept in the audit log).")
    @client_options
    @json_option
    def command(
        name: str,
        request_id: int,
        reason: str,
        server: str,
        token_file: Path | None,
        ca: Path | None,
        as_json: bool,
    ) -> None:
        client = _client(server, token_file, ca)
        data = client.call(
            "POST",
            f"/v1/hosts/{name}/tpm-requests/{request_id}/{decision}",
            body={"reason": reason},
        )
        _print_or_json(data, as_json, lambda _: click.echo(past.format(name=name, id=request_id)))

    command.__doc__ = doc
    return host.command(f"{decision}-tpm")(command)


_tpm_decision(
    "accept",
    "TPM change request {id} accepted: the new TPM's agent enrols as host {name} at its next "
    "report; without a vendor certificate chain it then waits for: hostseal host approve {name}.",
    "Accept a TPM change request of host NAME after a TPM or system board replacement: that "
    "TPM's next enrolment replaces the host's EK (operator; audited with both EKs).",
)
_tpm_decision(
    "reject",
    "TPM change request {id} rejected: host {name} is unchanged and that TPM is refused.",
    "Reject a TPM change request of host NAME: that TPM is refused under the name (operator; "
    "audited).",
)
_host_action(
    "approve",
    "approved",
    "Approve a host whose EK has no trusted vendor certificate chain (operator; audited).",
)


@host.command("enrolment-token")
@click.option("--host", "host_name", help="The one host name it enrols (the token is used once).")
@click.option(
    "--uses",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Without --host: how many new hosts it enrols (a batch token).",
)
@click.option(
    "--hours", type=click.IntRange(1, 720), default=24, show_default=True, help="Valid for."
)
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@client_options
@json_option
def host_enrolment_token(
    host_name: str | None,
    uses: int,
    hours: int,
    reason: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Make an enrolment token (admin; audited; shown once), for a server that enrols only with
    one (HOSTSEAL_SERVER_ENROLMENT=token). Give it to the agent in a file:
    hostseal agent run --enrolment-token-file FILE."""
    body = {"host": host_name, "uses": uses, "hours": hours, "reason": reason}
    data = _client(server, token_file, ca).call("POST", "/v1/enrolment-tokens", body=body)

    def human(d: dict[str, Any]) -> None:
        what = f"host {d['host']}" if d["host"] else f"{d['uses']} new host(s)"
        click.echo(d["token"])
        click.echo(
            f"Enrolment token for {what}, valid until {d['expires_at']}; shown this once. Put "
            "it in a file (mode 0600) on the host: hostseal agent run --enrolment-token-file "
            "FILE.",
            err=True,
        )

    _print_or_json(data, as_json, human)


@host.command("remove")
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@client_options
@json_option
def host_remove(
    name: str, reason: str, server: str, token_file: Path | None, ca: Path | None, as_json: bool
) -> None:
    """Remove a host (operator; audited). It is kept as a removed host with its verdicts and
    alarms (host list --removed); its agent tokens are revoked; its escrowed recovery keys are
    kept. The name may enrol again as a new host."""
    data = _client(server, token_file, ca).call(
        "DELETE", f"/v1/hosts/{name}", params={"reason": reason}
    )
    _print_or_json(data, as_json, lambda _: click.echo(f"Host {name} removed."))


# --- alarms ----------------------------------------------------------------------------------


def _alarms_table(alarms: list[dict[str, Any]]) -> None:
    table = rich_table("Id", "Host", "Alarm", "State", "Raised", "Message")
    for a in alarms:
        table.add_row(str(a["id"]), a["host"], a["title"], a["state"], a["raised_at"], a["message"])
    rich_console().print(table)


@click.group()
def alarm() -> None:
    """Alarms: host TPM attestation, TPM encryption recovery key backup."""


@alarm.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include cleared alarms (history).")
@click.option("--host", "host_name", help="Only this host's alarms.")
@click.option("--removed", is_flag=True, help="The alarms of removed hosts instead.")
@client_options
@json_option
def alarm_list(
    show_all: bool,
    host_name: str | None,
    removed: bool,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Alarms not cleared (viewer); --all for the history."""
    params = {} if show_all else {"state": "active"}
    if host_name:
        params["host"] = host_name
    if removed:
        params["removed"] = "true"
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
    table = rich_table("Policy", "Bank", "Quoted PCRs", "Hosts", "Updated", "By")
    for p in policies:
        table.add_row(
            p["name"],
            p["bank"],
            ",".join(str(i) for i in p["pcrs"]),
            ", ".join(p["hosts"]),
            p["updated_at"],
            p["updated_by"],
        )
    rich_console().print(table)


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


def _history_lines(events: list[dict[str, Any]]) -> None:
    """One paragraph per change: the summaries are long, a table would cut them."""
    for e in events:
        d = e.get("details") or {}
        what = e["action"].removeprefix("policy.")
        host = f" {e['host']}" if e.get("host") else ""
        click.echo(f"{e['at']}  {e['who']} ({e['role']})  {what}{host}")
        click.echo(f"  reason: {e.get('reason') or '-'}")
        click.echo(f"  {'LOOSENED: ' if d.get('loosened') else ''}{d.get('summary') or '-'}")
        if e["action"] == "policy.assigned":
            old, new = d.get("old") or {}, d.get("new") or {}
            click.echo(f"  policy: {old.get('name', 'none')} → {new.get('name', 'none')}")
        else:
            click.echo(f"  digest: {d.get('old_digest') or 'none'} → {d.get('new_digest')}")


@policy.command("history")
@click.argument("name")
@client_options
@json_option
def policy_history(
    name: str, server: str, token_file: Path | None, ca: Path | None, as_json: bool
) -> None:
    """Who changed or assigned policy NAME, when, why and what it loosened (viewer)."""
    data = _client(server, token_file, ca).call("GET", f"/v1/policies/{name}/history")
    _print_or_json(data, as_json, _history_lines)


@policy.command("set")
@click.argument("name")
@click.argument("file", type=click.File("r"))
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@client_options
@json_option
def policy_set(
    name: str,
    file: Any,
    reason: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Create or replace policy NAME from a JSON FILE ('-' for stdin) (operator). The audit log
    keeps the reason, the old and new digests and what the change loosens or tightens."""
    try:
        document = json.load(file)
    except ValueError as exc:
        raise HostsealError(
            f"{file.name} is not JSON: {exc}.", "Give a reference policy JSON document."
        ) from exc
    data = _client(server, token_file, ca).call(
        "PUT", f"/v1/policies/{name}", body=document, params={"reason": reason}
    )
    _print_or_json(data, as_json, lambda _: click.echo(f"Policy {name} saved."))


@policy.command("capture")
@click.argument("name")
@click.option("--host", "host_name", required=True, help="The known-good host to capture.")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@client_options
@json_option
def policy_capture(
    name: str,
    host_name: str,
    reason: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Capture policy NAME from a known-good host's last verified evidence and assign it to
    that host (operator)."""
    data = _client(server, token_file, ca).call(
        "POST", "/v1/policies/capture", body={"name": name, "host": host_name, "reason": reason}
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
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@client_options
@json_option
def policy_assign(
    name: str,
    hosts: tuple[str, ...],
    reason: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Assign policy NAME to HOSTS ('none' to unassign) (operator)."""
    client = _client(server, token_file, ca)
    target = None if name == "none" else name
    body = {"policy": target, "reason": reason}
    results = [client.call("PUT", f"/v1/hosts/{h}/policy", body=body) for h in hosts]
    _print_or_json(
        results, as_json, lambda _: click.echo(f"Policy {name} assigned to {', '.join(hosts)}.")
    )


# --- escrow ----------------------------------------------------------------------------------


def _keys_table(data: dict[str, Any]) -> None:
    table = rich_table("Recovery ID", "Key", "Current", "Escrowed", title=f"Host {data['host']}")
    for k in data["keys"]:
        table.add_row(k["recovery_id"], k["key"], "yes" if k["current"] else "", k["escrowed_at"])
    rich_console().print(table)


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


def _refuse_to_overwrite(out: Path, force: bool) -> None:
    if not force and (out.exists() or out.is_symlink()):
        raise HostsealError(
            f"{out} already exists; the export was not written.",
            remedy="Pass --force to replace it, or choose another --out file.",
        )


@escrow.command("export")
@click.option("--reason", required=True, help="Why you export the keys (kept in the audit log).")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File to write (mode 0600); an existing file is replaced only with --force.",
)
@click.option("--force", is_flag=True, help="Replace the --out file if it exists.")
@client_options
def escrow_export(
    reason: str, out: Path, force: bool, server: str, token_file: Path | None, ca: Path | None
) -> None:
    """Export every escrowed key as one JSON document (mode 0600, written atomically)."""
    _refuse_to_overwrite(out, force)
    data = _client(server, token_file, ca).call("GET", "/v1/escrow", params={"reason": reason})
    _refuse_to_overwrite(out, force)
    atomic_write(out, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)
    keys = sum(len(h["keys"]) for h in data["hosts"])
    click.echo(f"{keys} recovery keys of {len(data['hosts'])} hosts written to {out}.")


# --- API tokens (remote; the server's data directory: hostseal server token) ----------------


@click.group()
def token() -> None:
    """API tokens over the API (admin; each change audited with a reason). On the server's data
    directory, without a running server: hostseal server token."""


@token.command("create")
@click.option(
    "--role", type=click.Choice(["viewer", "operator", "admin"]), required=True, help="The role."
)
@click.option("--name", required=True, help="Who holds the token (unique among active tokens).")
@click.option("--reason", required=True, help="Why the token is made (kept in the audit log).")
@client_options
@json_option
def token_create(
    role: str,
    name: str,
    reason: str,
    server: str,
    token_file: Path | None,
    ca: Path | None,
    as_json: bool,
) -> None:
    """Create a token and print it once: the server stores only its hash."""
    body = {"name": name, "role": role, "reason": reason}
    data = _client(server, token_file, ca).call("POST", "/v1/tokens", body=body)
    if as_json:
        echo_json(data)
        return
    click.echo(data["token"])
    click.echo(
        f"Token {name!r} ({role}) created. It is shown only now: give it to its holder, who "
        "sets HOSTSEAL_TOKEN (or uses --token-file).",
        err=True,
    )


@token.command("list")
@client_options
@json_option
def token_list(server: str, token_file: Path | None, ca: Path | None, as_json: bool) -> None:
    """The user tokens (names, roles, dates; never the tokens themselves)."""
    data = _client(server, token_file, ca).call("GET", "/v1/tokens")

    def human(rows: list[dict[str, Any]]) -> None:
        table = rich_table("Name", "Role", "Created", "Revoked")
        for row in rows:
            table.add_row(row["name"], row["role"], row["created_at"], row["revoked_at"] or "")
        rich_console().print(table)

    _print_or_json(data, as_json, human)


@token.command("revoke")
@click.argument("name")
@click.option("--reason", required=True, help="Why the token is revoked (kept in the audit log).")
@client_options
def token_revoke(
    name: str, reason: str, server: str, token_file: Path | None, ca: Path | None
) -> None:
    """Revoke the active token called NAME; it stops working at once."""
    path = f"/v1/tokens/{quote(name, safe='')}"
    _client(server, token_file, ca).call("DELETE", path, params={"reason": reason})
    click.echo(f"Token {name!r} revoked.")
