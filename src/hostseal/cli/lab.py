"""``hostseal lab``: simulated hosts (swtpm + a firmware simulation) for tests and demos."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from hostseal import lab as _lab
from hostseal.cli._common import echo_json, json_option, settings_of


def _boot_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--kernel-cmdline", help="Kernel command line GRUB measures (PCR 8).")(f)
    f = click.option("--kernel", help="Kernel image name; a new name is a new digest (PCR 4, 9).")(
        f
    )
    f = click.option("--bootloader", help="Boot loader name; a new name is a new digest (PCR 4).")(
        f
    )
    f = click.option(
        "--secure-boot", type=click.Choice(["on", "off"]), help="UEFI Secure Boot (PCR 7)."
    )(f)
    return f


def _boot(
    host_boot: _lab.BootConfig | None,
    secure_boot: str | None,
    kernel_cmdline: str | None,
    kernel: str | None,
    bootloader: str | None,
) -> _lab.BootConfig | None:
    if secure_boot is None and kernel_cmdline is None and kernel is None and bootloader is None:
        return None
    base = host_boot or _lab.BootConfig()
    return base.with_changes(
        secure_boot=None if secure_boot is None else secure_boot == "on",
        kernel_cmdline=kernel_cmdline,
        kernel=kernel,
        bootloader=bootloader,
    )


def _show(host: _lab.LabHost, as_json: bool, what: str) -> None:
    if as_json:
        echo_json(host.to_dict())
        return
    sb = "on" if host.boot.secure_boot else "off"
    click.echo(
        f"Lab host {host.name} {what}: TPM at {host.tcti}, Secure Boot {sb}, "
        f"event log {host.eventlog}"
    )
    click.echo(f'Use it with: eval "$(hostseal lab env {host.name})"')


def _parse_banks(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--pcr-banks``: checked before anything starts (a usage error, exit code 2)."""
    banks = tuple(b.strip() for b in value.split(",") if b.strip())
    accepted = f"a lab TPM has {_lab.banks_text()} (comma-separated)."
    if not banks:
        raise click.BadParameter(f"no PCR bank given; {accepted}")
    for bank in banks:
        if bank not in _lab.LAB_BANKS:
            raise click.BadParameter(f"unknown PCR bank {bank!r}; {accepted}")
    return banks


@click.group()
def lab() -> None:
    """Simulated hosts: a software TPM whose PCRs a simulated firmware extends at each boot.

    Lab state lives under HOSTSEAL_LAB_DIR (default $XDG_RUNTIME_DIR/hostseal-lab, else
    ~/.local/state/hostseal/lab)."""


@lab.command()
@click.argument("name")
@_boot_options
@click.option(
    "--pcr-banks",
    default="sha1,sha256",
    show_default=True,
    callback=_parse_banks,
    help="PCR banks of a new TPM, comma-separated: sha1, sha256, sha384, sha512 (e.g. sha1 "
    "alone, to play a host whose SHA-256 bank is off).",
)
@json_option
@click.pass_context
def start(
    ctx: click.Context,
    name: str,
    secure_boot: str | None,
    kernel_cmdline: str | None,
    kernel: str | None,
    bootloader: str | None,
    pcr_banks: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create (first time) or power on lab host NAME and measure its boot."""
    lab_dir = settings_of(ctx).lab_dir
    banks = pcr_banks
    boot = _boot(None, secure_boot, kernel_cmdline, kernel, bootloader)
    host = _lab.start(lab_dir, name, boot=boot, banks=banks)
    _show(host, as_json, "started")


@lab.command()
@click.argument("name")
@_boot_options
@json_option
@click.pass_context
def reboot(
    ctx: click.Context,
    name: str,
    secure_boot: str | None,
    kernel_cmdline: str | None,
    kernel: str | None,
    bootloader: str | None,
    as_json: bool,
) -> None:
    """Power-cycle NAME: PCRs reset, the boot (with any changes given) is measured again."""
    lab_dir = settings_of(ctx).lab_dir
    current = _lab.load(lab_dir, name)
    boot = _boot(current.boot, secure_boot, kernel_cmdline, kernel, bootloader)
    _show(_lab.reboot(lab_dir, name, boot), as_json, "rebooted")


@lab.command("replace-tpm")
@click.argument("name")
@json_option
@click.pass_context
def replace_tpm(ctx: click.Context, name: str, as_json: bool) -> None:
    """Swap NAME's TPM for a new one (new EK, new seeds), as a system-board swap does."""
    _show(_lab.replace_tpm(settings_of(ctx).lab_dir, name), as_json, "has a new TPM")


@lab.command("clear-tpm")
@click.argument("name")
@json_option
@click.pass_context
def clear_tpm(ctx: click.Context, name: str, as_json: bool) -> None:
    """Clear NAME's TPM (TPM2_Clear: new storage seed) and reboot."""
    _show(_lab.clear_tpm(settings_of(ctx).lab_dir, name), as_json, "had its TPM cleared")


@lab.command()
@click.argument("name")
@click.option("--remove", is_flag=True, help="Also delete the host and its TPM.")
@json_option
@click.pass_context
def stop(ctx: click.Context, name: str, remove: bool, as_json: bool) -> None:
    """Power off NAME (its TPM is kept unless --remove)."""
    lab_dir = settings_of(ctx).lab_dir
    if remove:
        _lab.destroy(lab_dir, name)
        if as_json:
            echo_json({"name": name, "removed": True})
        else:
            click.echo(f"Lab host {name} removed.")
        return
    _show(_lab.stop(lab_dir, name), as_json, "stopped")


@lab.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """The lab hosts and whether they run."""
    hosts = _lab.list_hosts(settings_of(ctx).lab_dir)
    if as_json:
        echo_json([h.to_dict() for h in hosts])
        return
    table = Table("name", "running", "TCTI", "Secure Boot", "boots", "TPM")
    for h in hosts:
        table.add_row(
            h.name,
            "yes" if h.running else "no",
            h.tcti if h.running else "-",
            "on" if h.boot.secure_boot else "off",
            str(h.boots),
            f"#{h.tpm_generation}",
        )
    Console().print(table)


@lab.command()
@click.argument("name")
@click.pass_context
def env(ctx: click.Context, name: str) -> None:
    """Print export lines so every hostseal command uses NAME: eval "$(hostseal lab env NAME)"."""
    for line in _lab.env_lines(_lab.load(settings_of(ctx).lab_dir, name)):
        click.echo(line)
