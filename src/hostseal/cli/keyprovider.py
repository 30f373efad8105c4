"""``hostseal keyprovider``: where vTPM keys come from (native, or a KMS over KMIP)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from hostseal.cli._common import echo_json, json_option
from hostseal.cli._secret import read_secret
from hostseal.client.transport import ALLOW_PLAIN_HTTP_FLAG
from hostseal.keyprovider import KeyProviderError, ProviderStore
from hostseal.vtpm.paths import VtpmDirs, default_vtpm_dir


def store() -> ProviderStore:
    return ProviderStore(VtpmDirs.at(default_vtpm_dir()).keyproviders)


def read_password(file: Path | None, fd: int | None, *, confirm: bool) -> bytes:
    """The backup password: from a file, a file descriptor, or a prompt -- never argv."""
    if file is not None and fd is not None:
        raise click.UsageError("Give --password-file or --password-fd, not both.")
    if file is not None:
        try:
            text = file.read_text()
        except OSError as err:
            raise KeyProviderError(
                f"Cannot read the password file {file} ({err.strerror or err}).",
                "Check the path and its permissions.",
            ) from None
    elif fd is not None:
        with os.fdopen(fd, "r", closefd=True) as stream:
            text = stream.read()
    else:
        text = read_secret("Key provider backup password", confirm=confirm)
    password = text.splitlines()[0] if text.strip() else ""
    return password.encode()


def password_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--password-fd",
        type=int,
        metavar="N",
        help="Read the backup password from file descriptor N.",
    )(f)
    f = click.option(
        "--password-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Read the backup password from the first line of this file.",
    )(f)
    return f


@click.group()
def keyprovider() -> None:
    """Key providers: where the keys that encrypt vTPM state come from.

    native: built in; a key-encryption key in a root-only file; issues no key until it is
    backed up (hostseal keyprovider backup). kmip: an external key server over mutual TLS.
    Configuration lives in HOSTSEAL_KEYPROVIDER_DIR (default: keyproviders/ in the vTPM
    directory, HOSTSEAL_VTPM_DIR)."""


@keyprovider.command()
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["native", "kmip"]), required=True)
@click.option(
    "--from-backup",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="native: restore the provider from its password-protected backup.",
)
@password_options
@click.option("--host", help="kmip: the KMS host name or address (its certificate names it).")
@click.option("--port", type=int, default=5696, show_default=True, help="kmip: the KMS port.")
@click.option("--ca", type=click.Path(path_type=Path, exists=True), help="kmip: CA of the KMS.")
@click.option("--cert", type=click.Path(path_type=Path, exists=True), help="kmip: client cert.")
@click.option("--key", type=click.Path(path_type=Path, exists=True), help="kmip: client key.")
@click.option("--no-check", is_flag=True, help="kmip: do not connect to the KMS now.")
@click.option("--default", "make_default", is_flag=True, help="Make it the default provider.")
@json_option
def add(
    name: str,
    kind: str,
    from_backup: Path | None,
    password_file: Path | None,
    password_fd: int | None,
    host: str | None,
    port: int,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    no_check: bool,
    make_default: bool,
    as_json: bool,
) -> None:
    """Add a key provider NAME."""
    providers = store()
    default = True if make_default else None
    if kind == "native":
        if from_backup is not None:
            password = read_password(password_file, password_fd, confirm=False)
            provider = providers.add_native_from_backup(
                name, from_backup.read_bytes(), password, default
            )
            what = "restored from its backup"
        else:
            provider = providers.add_native(name, default)
            what = "added"
        info = provider.describe()
        if as_json:
            echo_json(info)
            return
        click.echo(f"Native key provider {name} {what}.")
        if not provider.backed_up:
            click.echo(
                f"It issues no key until it is backed up: hostseal keyprovider backup {name} "
                "--out FILE (keep FILE and its password away from this host)."
            )
        return
    if not (host and ca and cert and key):
        raise click.UsageError("--type kmip needs --host, --ca, --cert and --key.")
    kmip = providers.add_kmip(name, host, ca, cert, key, port, not no_check, default)
    if as_json:
        echo_json(kmip.describe())
        return
    checked = "" if no_check else " (mutual TLS session checked)"
    click.echo(f"KMIP key provider {name} added: {kmip.server}{checked}.")


@keyprovider.command(name="list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List the key providers."""
    providers = store().list()
    if as_json:
        echo_json(providers)
        return
    if not providers:
        click.echo("No key provider. Add one: hostseal keyprovider add NAME --type native")
        return
    for info in providers:
        mark = "*" if info.get("default") else " "
        if info.get("kind") == "native":
            state = "backed up" if info.get("backed_up") else "NOT BACKED UP (issues no key)"
            click.echo(f"{mark} {info['name']}  native  {state}, {info.get('keys', 0)} keys")
        else:
            click.echo(f"{mark} {info['name']}  {info.get('kind')}  {info.get('server', '')}")
        if "error" in info:
            click.echo(f"    error: {info['error']}")


@keyprovider.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(name: str, yes: bool) -> None:
    """Remove key provider NAME (a native provider's key-encryption key is deleted: vTPMs
    it encrypts can be opened again only after restoring it from its backup)."""
    from hostseal.vtpm import list_vtpms

    users = [s.record.name for s in list_vtpms(VtpmDirs.at(default_vtpm_dir()))]
    users = [n for n in users if _provider_of(n) == name]
    if users:
        click.echo(
            f"vTPMs whose keys come from {name}: {', '.join(users)}. They cannot start again "
            "until the provider is restored (hostseal keyprovider add --from-backup).",
            err=True,
        )
    if not yes:
        click.confirm(f"Remove key provider {name}?", abort=True)
    store().remove(name)
    click.echo(f"Key provider {name} removed.")


def _provider_of(vm: str) -> str:
    from hostseal.vtpm import status

    return status(VtpmDirs.at(default_vtpm_dir()), vm).record.provider


@keyprovider.command()
@click.argument("name")
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Backup file."
)
@password_options
@json_option
def backup(
    name: str, out: Path, password_file: Path | None, password_fd: int | None, as_json: bool
) -> None:
    """Back up native key provider NAME's key-encryption key to a password-protected file."""
    provider = store().native(name)
    password = read_password(password_file, password_fd, confirm=True)
    provider.write_backup(out, password)
    if as_json:
        echo_json({"name": name, "file": str(out), "backup": provider.backup_info()})
        return
    click.echo(f"Key provider {name} backed up to {out}. Keep the file and its password apart,")
    click.echo("away from this host: both are needed to restore the provider.")


@keyprovider.command(name="set-default")
@click.argument("name")
def set_default(name: str) -> None:
    """Make NAME the default key provider of new vTPMs."""
    store().set_default(name)
    click.echo(f"Key provider {name} is the default.")


@keyprovider.command(name="require-attestation")
@click.option("--host", help="This host's name at the attestation service.")
@click.option("--server", help="The attestation service, e.g. https://hostseal.example:8443")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/hostseal/agent/token"),
    show_default=True,
    help="The agent token this host got at enrolment.",
)
@click.option("--ca", type=click.Path(path_type=Path, exists=True), help="CA of the service.")
@click.option("--off", is_flag=True, help="Release keys without asking the service.")
@click.option(
    ALLOW_PLAIN_HTTP_FLAG,
    "allow_plain_http",
    is_flag=True,
    help="Development only: allow an http:// service on this machine (127.0.0.0/8, ::1, "
    "localhost); kept in the release configuration.",
)
def require_attestation(
    host: str | None,
    server: str | None,
    token_file: Path,
    ca: Path | None,
    off: bool,
    allow_plain_http: bool,
) -> None:
    """Release vTPM keys only while this host's last attestation passed."""
    providers = store()
    if off:
        providers.release_without_attestation()
        click.echo("Keys are released without asking the attestation service.")
        return
    if not (host and server):
        raise click.UsageError("Give --host and --server (or --off).")
    providers.require_attestation(
        host, server, token_file, ca, allow_plain_http_loopback=allow_plain_http
    )
    click.echo(f"Keys are released only while host {host}'s last attestation passed.")
