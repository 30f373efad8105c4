"""``hostseal vtpm``: virtual TPMs for virtual machines (swtpm), keys from a key provider."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from hostseal import vtpm as _vtpm
from hostseal.cli._common import echo_json, json_option
from hostseal.keyprovider import ProviderStore
from hostseal.vtpm import ca as _ca
from hostseal.vtpm.paths import VtpmDirs, default_vtpm_dir


def _dirs() -> VtpmDirs:
    return VtpmDirs.at(default_vtpm_dir())


def _providers(dirs: VtpmDirs) -> ProviderStore:
    return ProviderStore(dirs.keyproviders)


def _show(status: _vtpm.VtpmStatus, as_json: bool, what: str) -> None:
    if as_json:
        echo_json(status.to_dict())
        return
    info = status.to_dict()
    click.echo(f"vTPM {status.record.name} {what}.")
    if status.running and status.runtime is not None:
        if status.runtime.tcti:
            click.echo(f"TCTI: {status.runtime.tcti}")
            click.echo(f"Use it with: export TPM2TOOLS_TCTI={shlex.quote(status.runtime.tcti)}")
        else:
            click.echo(f"Control socket for QEMU/libvirt: {status.runtime.socket}")
            click.echo(f"QEMU arguments: hostseal vtpm qemu-args {status.record.name}")
    click.echo(f"State: {info['encrypted']}, key id {status.record.key_id}")


@click.group()
def vtpm() -> None:
    """Virtual TPMs (TPM 2.0, swtpm) for virtual machines, their state encrypted with keys from
    a key provider (hostseal keyprovider). State lives in HOSTSEAL_VTPM_DIR (default
    /var/lib/hostseal/vtpm as root, else ~/.local/state/hostseal/vtpm)."""


@vtpm.command()
@click.argument("vm")
@click.option("--key-provider", metavar="NAME", help="Key provider (default: the default one).")
@click.option(
    "--domain-xml",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The VM's libvirt definition (virsh dumpxml VM): check UEFI and machine type first.",
)
@click.option("--pcr-banks", default="sha256", show_default=True, help="Active PCR banks.")
@json_option
def create(
    vm: str, key_provider: str | None, domain_xml: Path | None, pcr_banks: str, as_json: bool
) -> None:
    """Create a vTPM for VM: EK and platform certificates from hostseal's vTPM CA, state
    encrypted with a new key from the key provider."""
    if domain_xml is not None:
        _vtpm.require_domain(domain_xml.read_text())
    dirs = _dirs()
    banks = tuple(b.strip() for b in pcr_banks.split(",") if b.strip())
    record = _vtpm.create(dirs, _providers(dirs), vm, key_provider, banks)
    _show(_vtpm.status(dirs, vm), as_json, "created")
    if not as_json:
        click.echo(f"EK certificates: {', '.join(record.ek_certificates) or 'none'} (CA {dirs.ca})")


@vtpm.command(name="check-vm")
@click.option(
    "--domain-xml", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True
)
@json_option
def check_vm(domain_xml: Path, as_json: bool) -> None:
    """Check that a VM definition can take a vTPM (UEFI firmware, q35/virt machine)."""
    problems = _vtpm.check_domain(domain_xml.read_text())
    if as_json:
        echo_json([{"what": p.what, "remedy": p.remedy} for p in problems])
    elif not problems:
        click.echo("The VM can take a vTPM.")
    for problem in [] if as_json else problems:
        click.echo(f"Problem: {problem.what}\n  What to do: {problem.remedy}")
    if problems:
        raise click.exceptions.Exit(1)


@vtpm.command()
@click.argument("vm")
@click.option("--tcp", is_flag=True, help="TCP ports for the TCTI instead of the QEMU socket.")
@json_option
def start(vm: str, tcp: bool, as_json: bool) -> None:
    """Start VM's vTPM (swtpm). Default: a control socket for QEMU/libvirt; --tcp: a port pair
    on 127.0.0.1 for the TCTI swtpm:host=127.0.0.1,port=N (direct use, tests)."""
    dirs = _dirs()
    _show(_vtpm.start(dirs, _providers(dirs), vm, tcp=tcp), as_json, "started")


@vtpm.command()
@click.argument("vm")
@json_option
def stop(vm: str, as_json: bool) -> None:
    """Stop VM's vTPM."""
    _show(_vtpm.stop(_dirs(), vm), as_json, "stopped")


@vtpm.command()
@click.argument("vm")
@json_option
def status(vm: str, as_json: bool) -> None:
    """Show VM's vTPM: running or not, TCTI or socket, key provider, EK certificates."""
    st = _vtpm.status(_dirs(), vm)
    if as_json:
        echo_json(st.to_dict())
        return
    _show(st, False, "is running" if st.running else "is stopped")
    for kind, digest in st.record.ek_fingerprints().items():
        click.echo(f"EK certificate ({kind}) SHA-256: {digest}")


@vtpm.command(name="list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List the vTPMs."""
    items = _vtpm.list_vtpms(_dirs())
    if as_json:
        echo_json([s.to_dict() for s in items])
        return
    if not items:
        click.echo("No vTPM. Create one: hostseal vtpm create VM")
    for st in items:
        where = (st.runtime.tcti or st.runtime.socket) if st.running and st.runtime else ""
        state = f"running {where}" if st.running else "stopped"
        click.echo(f"{st.record.name}  {state}  key provider {st.record.provider}")


@vtpm.command()
@click.argument("vm")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--destroy-key", is_flag=True, help="Also destroy the data key (backups become useless)."
)
def remove(vm: str, yes: bool, destroy_key: bool) -> None:
    """Stop VM's vTPM and wipe its state (what the guest stored in it is lost)."""
    dirs = _dirs()
    _vtpm.status(dirs, vm)  # exists?
    if not yes:
        click.confirm(
            f"Remove the vTPM of {vm}? Keys and secrets the guest keeps in it are lost.",
            abort=True,
        )
    _vtpm.remove(dirs, _providers(dirs), vm, destroy_key=destroy_key)
    click.echo(f"vTPM {vm} removed.")


@vtpm.command(name="libvirt-xml")
@click.argument("vm")
@click.option(
    "--backend",
    type=click.Choice(["emulator", "external"]),
    default="emulator",
    show_default=True,
    help="emulator: libvirt runs swtpm; external: QEMU connects to hostseal's swtpm.",
)
@click.option("--secret", is_flag=True, help="Print the libvirt <secret> definition instead.")
def libvirt_xml(vm: str, backend: str, secret: bool) -> None:
    """Print the <tpm> element for VM's libvirt domain."""
    st = _vtpm.status(_dirs(), vm)
    if secret:
        click.echo(_vtpm.secret_xml(st.record), nl=False)
    else:
        click.echo(_vtpm.tpm_xml(st.record, st.path, backend), nl=False)


@vtpm.command(name="qemu-args")
@click.argument("vm")
def qemu_args(vm: str) -> None:
    """Print the QEMU arguments that attach VM's vTPM (after hostseal vtpm start VM)."""
    st = _vtpm.status(_dirs(), vm)
    click.echo(shlex.join(_vtpm.qemu_args(st.path)))


@vtpm.command()
@click.argument("source")
@click.argument("target")
@click.option("--policy", type=click.Choice(["copy", "replace"]), required=True)
@click.option("--key-provider", metavar="NAME", help="Key provider of the clone.")
@json_option
def clone(source: str, target: str, policy: str, key_provider: str | None, as_json: bool) -> None:
    """Clone SOURCE's vTPM for TARGET. copy: same EK and secrets (new data key); replace: a
    new, empty vTPM with its own EK and certificate."""
    dirs = _dirs()
    _vtpm.clone(dirs, _providers(dirs), source, target, policy, key_provider)
    _show(_vtpm.status(dirs, target), as_json, f"cloned from {source} ({policy})")


@vtpm.command()
@click.argument("vm")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@json_option
def backup(vm: str, out: Path, as_json: bool) -> None:
    """Back up VM's vTPM: encrypted state plus the key's provider and id (never the key)."""
    info = _vtpm.backup(_dirs(), vm, out)
    if as_json:
        echo_json(info)
        return
    click.echo(f"vTPM {vm} backed up to {out} (SHA-256 of the content {info['sha256']}).")
    click.echo(f"Restoring it needs key provider {_vtpm.status(_dirs(), vm).record.provider}.")


@vtpm.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--name", help="Restore under this VM name (default: the original one).")
@click.option(
    "--to",
    "to_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="vTPM directory to restore into (default: HOSTSEAL_VTPM_DIR).",
)
@click.option("--key-provider", metavar="NAME", help="The provider holding the key, here.")
@json_option
def restore(
    file: Path, name: str | None, to_dir: Path | None, key_provider: str | None, as_json: bool
) -> None:
    """Restore a vTPM backup (checked, and its key obtained, before anything is written)."""
    dirs = _dirs()
    target = VtpmDirs(to_dir, dirs.keyproviders) if to_dir else dirs
    record = _vtpm.restore(target, _providers(dirs), file.read_bytes(), name, key_provider)
    _show(_vtpm.status(target, record.name), as_json, f"restored into {target.vms}")


@vtpm.group(name="ca")
def ca_group() -> None:
    """hostseal's vTPM CA, which issues the EK and platform certificates."""


@ca_group.command(name="show")
@json_option
def ca_show(as_json: bool) -> None:
    """Show the vTPM CA."""
    info = _ca.info(_dirs().ca)
    if as_json:
        echo_json(info.to_dict())
        return
    for key, value in info.to_dict().items():
        click.echo(f"{key}: {value}")


@ca_group.command(name="create")
@click.option("--key-provider", metavar="NAME", help="Provider whose key encrypts the CA key.")
@click.option("--subject", default=_ca.SUBJECT, show_default=True)
def ca_create(key_provider: str | None, subject: str) -> None:
    """Create the vTPM CA (ECDSA P-384, self-signed) if there is none."""
    dirs = _dirs()
    if _ca.exists(dirs.ca):
        raise click.UsageError(f"The vTPM CA exists already ({dirs.ca}); see: vtpm ca show")
    info = _ca.create(dirs.ca, _providers(dirs).open(key_provider), subject)
    click.echo(f"vTPM CA created: {info.subject}, SHA-256 {info.fingerprint}")


@ca_group.command(name="import")
@click.option("--cert", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--key", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--chain", type=click.Path(path_type=Path, exists=True), help="Parents, PEM.")
@click.option("--key-password-file", type=click.Path(path_type=Path, exists=True))
@click.option("--key-provider", metavar="NAME", help="Provider whose key encrypts the CA key.")
def ca_import(
    cert: Path,
    key: Path,
    chain: Path | None,
    key_password_file: Path | None,
    key_provider: str | None,
) -> None:
    """Use your own CA (or an intermediate) for new vTPMs' certificates."""
    dirs = _dirs()
    password = key_password_file.read_bytes().splitlines()[0] if key_password_file else None
    info = _ca.import_ca(
        dirs.ca,
        _providers(dirs).open(key_provider),
        cert.read_bytes(),
        key.read_bytes(),
        chain.read_bytes() if chain else b"",
        password,
    )
    click.echo(f"vTPM CA imported: {info.subject}, SHA-256 {info.fingerprint}")
    click.echo(f"Delete {key} now if it should live only in hostseal (encrypted).")
