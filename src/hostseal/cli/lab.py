"""``hostseal lab``: lab hosts for tests and demos, of two kinds.

* simulated (``--firmware sim``, the default): swtpm plus a firmware simulation, instant;
* real firmware (``--firmware ovmf``): a QEMU VM with OVMF, Secure Boot, swtpm and Debian's
  signed shim -> grub -> kernel -> systemd (:mod:`hostseal.lab.vm`); about 30-40 s a boot.

reboot, replace-tpm, clear-tpm, stop and list work on both kinds; exec and console on VMs.
The lab packages are imported inside the commands: ``hostseal --help`` stays light.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hostseal.cli._common import echo_json, json_option, rich_console, rich_table, settings_of

if TYPE_CHECKING:
    from hostseal.lab import BootConfig, LabHost
    from hostseal.lab.vm import VmHost


def _boot_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--loader",
        type=click.Choice(["linuxefi", "linux"]),
        help="VM only: grub's command for the kernel; 'linux' (Debian's default) leaves no "
        "event log when Secure Boot is off.",
    )(f)
    f = click.option("--kernel-cmdline", help="Kernel command line GRUB measures (PCR 8).")(f)
    f = click.option(
        "--kernel", help="Simulated only: kernel image name; a new name is a new digest."
    )(f)
    f = click.option(
        "--bootloader", help="Simulated only: boot loader name; a new name is a new digest."
    )(f)
    f = click.option(
        "--no-secure-boot", is_flag=True, help="Secure Boot off (the same as --secure-boot off)."
    )(f)
    f = click.option(
        "--secure-boot",
        type=click.Choice(["on", "off"]),
        help="UEFI Secure Boot (PCR 7); on a VM set in the firmware's variable store.",
    )(f)
    return f


def _secure_boot(secure_boot: str | None, no_secure_boot: bool) -> bool | None:
    if no_secure_boot and secure_boot == "on":
        raise click.UsageError("--no-secure-boot and --secure-boot on contradict each other.")
    if no_secure_boot:
        return False
    return None if secure_boot is None else secure_boot == "on"


def _sim_boot(
    host_boot: BootConfig | None,
    secure_boot: bool | None,
    kernel_cmdline: str | None,
    kernel: str | None,
    bootloader: str | None,
    loader: str | None,
) -> BootConfig | None:
    from hostseal import lab as _lab

    if loader is not None:
        raise click.UsageError("--loader is for real-firmware hosts (--firmware ovmf).")
    if secure_boot is None and kernel_cmdline is None and kernel is None and bootloader is None:
        return None
    base = host_boot or _lab.BootConfig()
    return base.with_changes(
        secure_boot=secure_boot, kernel_cmdline=kernel_cmdline, kernel=kernel, bootloader=bootloader
    )


def _vm_only_options(kernel: str | None, bootloader: str | None) -> None:
    if kernel is not None or bootloader is not None:
        raise click.UsageError(
            "--kernel and --bootloader name simulated images; a real-firmware host boots "
            "Debian's signed kernel (change its command line with --kernel-cmdline)."
        )


def _loader(loader: str | None) -> bool | None:
    return None if loader is None else loader == "linuxefi"


def _show(host: LabHost, as_json: bool, what: str) -> None:
    if as_json:
        echo_json(host.to_dict())
        return
    sb = "on" if host.boot.secure_boot else "off"
    click.echo(
        f"Lab host {host.name} {what}: TPM at {host.tcti}, Secure Boot {sb}, "
        f"event log {host.eventlog}"
    )
    click.echo(f'Use it with: eval "$(hostseal lab env {host.name})"')


def _show_vm(host: VmHost, as_json: bool, what: str) -> None:
    if as_json:
        echo_json(host.to_dict())
        return
    sb = "on" if host.secure_boot else "off"
    state = "running" if host.running else "off"
    click.echo(
        f"Lab host {host.name} (real firmware) {what}: {state}, Secure Boot {sb}, "
        f"loader {'linuxefi' if host.linuxefi else 'linux'}, TPM #{host.tpm_generation}, "
        f"boot {host.boots}"
    )
    click.echo(
        f"Use it with: hostseal lab exec {host.name} -- COMMAND   (or: {host.to_dict()['ssh']})"
    )


def _parse_banks(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    """``--pcr-banks``: checked before anything starts (a usage error, exit code 2)."""
    from hostseal.lab import LAB_BANKS, banks_text

    banks = tuple(b.strip() for b in value.split(",") if b.strip())
    accepted = f"a lab TPM has {banks_text()} (comma-separated)."
    if not banks:
        raise click.BadParameter(f"no PCR bank given; {accepted}")
    for bank in banks:
        if bank not in LAB_BANKS:
            raise click.BadParameter(f"unknown PCR bank {bank!r}; {accepted}")
    return banks


def _is_vm(ctx: click.Context, name: str) -> bool:
    from hostseal.lab import vm

    return vm.is_vm(settings_of(ctx).lab_dir, name)


@click.group()
def lab() -> None:
    """Lab hosts: simulated (a software TPM a simulated firmware extends) or real firmware
    (a QEMU VM: OVMF, Secure Boot, swtpm, Debian's signed boot chain and systemd).

    Lab state lives under HOSTSEAL_LAB_DIR (default $XDG_RUNTIME_DIR/hostseal-lab, else
    ~/.local/state/hostseal/lab); the VM's disk image is cached in HOSTSEAL_LAB_CACHE (default
    ~/.cache/hostseal/lab)."""


@lab.command()
@click.argument("name")
@click.option(
    "--firmware",
    type=click.Choice(["sim", "ovmf"]),
    default="sim",
    show_default=True,
    help="sim: simulated firmware (instant); ovmf: a real-firmware VM (builds its disk image "
    "once, as root, then ~30-40 s a boot).",
)
@_boot_options
@click.option(
    "--pcr-banks",
    default="sha1,sha256",
    show_default=True,
    callback=_parse_banks,
    help="PCR banks of a new TPM, comma-separated: sha1, sha256, sha384, sha512 (e.g. sha1 "
    "alone, to play a host whose SHA-256 bank is off).",
)
@click.option(
    "--guest-port",
    type=click.IntRange(1, 65535),
    help="VM only: the guest reaches 127.0.0.1:PORT of this machine at 10.0.2.100:PORT.",
)
@click.option("--no-wait", is_flag=True, help="VM only: return once QEMU runs, not at SSH.")
@json_option
@click.pass_context
def start(
    ctx: click.Context,
    name: str,
    firmware: str,
    secure_boot: str | None,
    no_secure_boot: bool,
    kernel_cmdline: str | None,
    kernel: str | None,
    bootloader: str | None,
    loader: str | None,
    pcr_banks: tuple[str, ...],
    guest_port: int | None,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Create (first time) or power on lab host NAME and boot it."""
    lab_dir = settings_of(ctx).lab_dir
    sb = _secure_boot(secure_boot, no_secure_boot)
    if firmware == "ovmf" or _is_vm(ctx, name):
        from hostseal.lab import vm

        _vm_only_options(kernel, bootloader)
        host = vm.start(
            lab_dir,
            name,
            secure_boot=sb,
            linuxefi=_loader(loader),
            cmdline=kernel_cmdline,
            guest_port=guest_port,
            banks=pcr_banks,
            wait=not no_wait,
        )
        _show_vm(host, as_json, "started")
        return
    from hostseal import lab as _lab

    if guest_port is not None or no_wait:
        raise click.UsageError("--guest-port and --no-wait are for --firmware ovmf.")
    boot = _sim_boot(None, sb, kernel_cmdline, kernel, bootloader, loader)
    _show(_lab.start(lab_dir, name, boot=boot, banks=pcr_banks), as_json, "started")


@lab.command()
@click.argument("name")
@_boot_options
@json_option
@click.pass_context
def reboot(
    ctx: click.Context,
    name: str,
    secure_boot: str | None,
    no_secure_boot: bool,
    kernel_cmdline: str | None,
    kernel: str | None,
    bootloader: str | None,
    loader: str | None,
    as_json: bool,
) -> None:
    """Power-cycle NAME: PCRs reset, the boot (with any changes given) runs again.

    On a VM: an orderly power-off, the changes made as an operator would (Secure Boot in the
    firmware's variables, grub.cfg on the ESP), then a cold boot."""
    lab_dir = settings_of(ctx).lab_dir
    sb = _secure_boot(secure_boot, no_secure_boot)
    if _is_vm(ctx, name):
        from hostseal.lab import vm

        _vm_only_options(kernel, bootloader)
        host = vm.reboot(
            lab_dir, name, secure_boot=sb, linuxefi=_loader(loader), cmdline=kernel_cmdline
        )
        _show_vm(host, as_json, "rebooted")
        return
    from hostseal import lab as _lab

    current = _lab.load(lab_dir, name)
    boot = _sim_boot(current.boot, sb, kernel_cmdline, kernel, bootloader, loader)
    _show(_lab.reboot(lab_dir, name, boot), as_json, "rebooted")


@lab.command("replace-tpm")
@click.argument("name")
@json_option
@click.pass_context
def replace_tpm(ctx: click.Context, name: str, as_json: bool) -> None:
    """Swap NAME's TPM for a new one (new EK, new seeds), as a system-board swap does."""
    lab_dir = settings_of(ctx).lab_dir
    if _is_vm(ctx, name):
        from hostseal.lab import vm

        _show_vm(vm.replace_tpm(lab_dir, name), as_json, "has a new TPM")
        return
    from hostseal import lab as _lab

    _show(_lab.replace_tpm(lab_dir, name), as_json, "has a new TPM")


@lab.command("clear-tpm")
@click.argument("name")
@json_option
@click.pass_context
def clear_tpm(ctx: click.Context, name: str, as_json: bool) -> None:
    """Clear NAME's TPM (TPM2_Clear: new storage seed) and reboot."""
    lab_dir = settings_of(ctx).lab_dir
    if _is_vm(ctx, name):
        from hostseal.lab import vm

        _show_vm(vm.clear_tpm(lab_dir, name), as_json, "had its TPM cleared")
        return
    from hostseal import lab as _lab

    _show(_lab.clear_tpm(lab_dir, name), as_json, "had its TPM cleared")


@lab.command()
@click.argument("name")
@click.option("--remove", is_flag=True, help="Also delete the host, its disk and its TPM.")
@click.option(
    "--hard",
    is_flag=True,
    help="VM only: kill QEMU at once, keeping its TPM running so the PCRs can be read.",
)
@json_option
@click.pass_context
def stop(ctx: click.Context, name: str, remove: bool, hard: bool, as_json: bool) -> None:
    """Power off NAME (its TPM is kept unless --remove); a VM shuts down in order."""
    lab_dir = settings_of(ctx).lab_dir
    vm_host = _is_vm(ctx, name)
    if remove:
        if vm_host:
            from hostseal.lab import vm

            vm.destroy(lab_dir, name)
        else:
            from hostseal import lab as _lab

            _lab.destroy(lab_dir, name)
        if as_json:
            echo_json({"name": name, "removed": True})
        else:
            click.echo(f"Lab host {name} removed.")
        return
    if vm_host:
        from hostseal.lab import vm

        _show_vm(vm.stop(lab_dir, name, hard=hard), as_json, "stopped")
        return
    if hard:
        raise click.UsageError("--hard is for real-firmware hosts (VMs).")
    from hostseal import lab as _lab

    _show(_lab.stop(lab_dir, name), as_json, "stopped")


@lab.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """The lab hosts of both kinds and whether they run."""
    from hostseal import lab as _lab
    from hostseal.lab import vm

    lab_dir = settings_of(ctx).lab_dir
    hosts = _lab.list_hosts(lab_dir)
    vms = vm.list_hosts(lab_dir)
    if as_json:
        echo_json(
            sorted(
                [{"kind": "sim", **h.to_dict()} for h in hosts] + [v.to_dict() for v in vms],
                key=lambda r: str(r["name"]),
            )
        )
        return
    table = rich_table("name", "kind", "running", "reach", "Secure Boot", "boots", "TPM")
    rows = [
        (
            h.name,
            "simulated",
            "yes" if h.running else "no",
            h.tcti if h.running else "-",
            "on" if h.boot.secure_boot else "off",
            str(h.boots),
            f"#{h.tpm_generation}",
        )
        for h in hosts
    ] + [
        (
            v.name,
            "VM (OVMF)",
            "yes" if v.running else "no",
            f"ssh 127.0.0.1:{v.ssh_port}" if v.running else "-",
            "on" if v.secure_boot else "off",
            str(v.boots),
            f"#{v.tpm_generation}",
        )
        for v in vms
    ]
    for row in sorted(rows):
        table.add_row(*row)
    rich_console().print(table)


@lab.command()
@click.argument("name")
@click.pass_context
def env(ctx: click.Context, name: str) -> None:
    """Print export lines so every hostseal command uses NAME: eval "$(hostseal lab env NAME)"."""
    from hostseal import lab as _lab

    if _is_vm(ctx, name):
        raise click.UsageError(
            f"{name} is a real-firmware host: its TPM is inside the VM. "
            f"Run commands there: hostseal lab exec {name} -- COMMAND"
        )
    for line in _lab.env_lines(_lab.load(settings_of(ctx).lab_dir, name)):
        click.echo(line)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds.")
@click.pass_context
def exec_(ctx: click.Context, name: str, command: tuple[str, ...], timeout: float) -> None:
    """Run COMMAND as root in VM host NAME (over SSH); its exit code is this command's.

    hostseal lab exec NAME -- tpm2_pcrread sha256:7"""
    import shlex

    from hostseal.lab import vm

    host = vm.load(settings_of(ctx).lab_dir, name)
    text = command[0] if len(command) == 1 else shlex.join(command)
    result = vm.run_on(host, text, timeout=timeout)
    click.echo(result.stdout, nl=False)
    click.echo(result.stderr, nl=False, err=True)
    ctx.exit(result.rc)


@lab.command()
@click.argument("name")
@click.option("--type", "line", help="Type LINE and Enter on the console (e.g. at a shell).")
@click.option("--all", "all_boots", is_flag=True, help="Every boot's output, not the last only.")
@click.option(
    "--wait-for", metavar="REGEX", help="Wait until the console shows REGEX (exit 1 on timeout)."
)
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds.")
@click.pass_context
def console(
    ctx: click.Context,
    name: str,
    line: str | None,
    all_boots: bool,
    wait_for: str | None,
    timeout: float,
) -> None:
    """Print VM host NAME's serial console (this boot), or type a line on it."""
    from hostseal.lab import vm

    host = vm.load(settings_of(ctx).lab_dir, name)
    if line is not None:
        vm.type_line(host, line)
        return
    if wait_for is not None:
        vm.wait_console(host, wait_for, timeout)
    sys.stdout.write(vm.console(host, all_boots=all_boots))


@lab.command("copy-in")
@click.argument("name")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("remote")
@click.pass_context
def copy_in(ctx: click.Context, name: str, local: Path, remote: str) -> None:
    """Copy the file LOCAL into VM host NAME at REMOTE."""
    from hostseal.lab import vm

    vm.copy_in(vm.load(settings_of(ctx).lab_dir, name), local, remote)
    click.echo(f"Copied {local} to {name}:{remote}.")


@lab.command()
@click.option("--rebuild", is_flag=True, help="Build again even if the image is cached.")
@json_option
def image(rebuild: bool, as_json: bool) -> None:
    """Build (once, as root; ~2 min) or show the VM hosts' cached disk image."""
    from hostseal.lab import realimage

    built = realimage.build() if rebuild else realimage.ensure()
    info = built.info()
    if as_json:
        echo_json({"path": str(built.path), "recipe": built.recipe, **info})
        return
    mib = int(str(info["disk_bytes"])) // 2**20
    click.echo(
        f"Lab image {built.recipe}: {built.path} ({mib} MiB, "
        f"kernel {built.kernel_version}, built in {info['build_seconds']} s)"
    )
