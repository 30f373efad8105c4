"""``hostseal config`` and ``hostseal recovery``: the sealed host configuration (ESXi's
``esxcli system settings encryption``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from hostseal.cli._common import echo_json, json_option, settings_of
from hostseal.cli._secret import read_secret
from hostseal.errors import HostsealError, SecurityViolation
from hostseal.secureconfig import (
    Mode,
    RecoveryKey,
    bootunit,
    inplace,
    manager,
    parse_recovery_id,
    parse_recovery_key,
)
from hostseal.secureconfig.info import EncryptionInfo

_KEY_HELP = (
    "The recovery key is never taken as an argument (it would show in ps and shell history): "
    "use --recovery-key to type it, or --recovery-key-file FILE ('-' for standard input)."
)


def _ctx(ctx: click.Context) -> manager.HostContext:
    s = settings_of(ctx)
    return manager.HostContext(tcti=s.tcti, eventlog=s.eventlog, bootbank=s.bootbank)


def _read_key(prompt: bool, key_file: str | None) -> bytes | None:
    if key_file is not None:
        text = sys.stdin.read() if key_file == "-" else Path(key_file).read_text()
        return parse_recovery_key(text)
    if prompt:
        return parse_recovery_key(read_secret("Recovery key"))
    return None


def _key_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--recovery-key-file", metavar="FILE", help="Read the recovery key from FILE ('-': stdin)."
    )(f)
    f = click.option(
        "--recovery-key",
        "recovery_prompt",
        is_flag=True,
        help="Type the recovery key at a prompt (not echoed).",
    )(f)
    return f


def _notices(notices: list[str]) -> None:
    for notice in notices:
        click.echo(f"Note: {notice}", err=True)


def _memory_backed(path: Path) -> bool:
    """Whether ``path`` is on tmpfs/ramfs (from /proc/self/mountinfo)."""
    path = path.resolve()
    best, fstype = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        left, _, right = line.partition(" - ")
        mount_point = left.split()[4]
        if (str(path) + "/").startswith(mount_point.rstrip("/") + "/") and len(mount_point) >= len(
            best
        ):
            best, fstype = mount_point, right.split()[0]
    return fstype in ("tmpfs", "ramfs")


@click.group()
@click.option(
    "--bootbank",
    type=click.Path(path_type=Path),
    help="Where the sealed configuration lives. Environment: HOSTSEAL_BOOTBANK; default "
    "/var/lib/hostseal/bootbank.",
)
@click.option(
    "--eventlog",
    type=click.Path(path_type=Path),
    help="The measured-boot event log. Environment: HOSTSEAL_EVENTLOG.",
)
@click.pass_context
def config(ctx: click.Context, bootbank: Path | None, eventlog: Path | None) -> None:
    """The host configuration, encrypted with a key sealed in the TPM.

    Exit codes: 0 done; 1 failed (the message says what to do); 3 security violation (the TPM
    would not release the key: the message names what changed)."""
    from hostseal.cli._common import AppContext

    ctx.obj = AppContext(settings_of(ctx).with_overrides(bootbank=bootbank, eventlog=eventlog))


_LIVE_HELP = (
    "The live tree: where the boot-time restore put the configuration (a tmpfs). Environment: "
    "HOSTSEAL_LIVE_DIR."
)


def _live_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--live",
        "live",
        type=click.Path(path_type=Path),
        envvar="HOSTSEAL_LIVE_DIR",
        default=inplace.RUNTIME_CONFIG,
        show_default=True,
        help=_LIVE_HELP,
    )(f)


def _mount_option(f: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--mount/--no-mount",
        "mount",
        default=True,
        show_default=True,
        help="Bind-mount (or unmount) the live copy at the original path now.",
    )(f)


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _require_tmpfs(live: Path, what: str) -> None:
    if not _memory_backed(_nearest_existing(live)):
        raise HostsealError(
            f"{live} is not on a tmpfs: {what} would be written to disk in clear.",
            "Give --live a directory under /run (the default is /run/hostseal/config).",
        )


def _adopted_lines(st: dict[str, object]) -> None:
    if not st["restored"]:
        click.echo("   Adopted Paths: unknown (not restored with config unlock --mount here)")
        return
    items = st["adopted"]
    assert isinstance(items, list)
    described = [
        f"{a['path']} ({a['kind']}, {'mounted' if a['mounted'] else 'NOT mounted'})" for a in items
    ]
    click.echo(f"   Adopted Paths: {', '.join(described) or 'none'}")
    unsaved = st["unsaved_changes"]
    click.echo(
        "   Unsaved Changes: "
        + (
            "unknown"
            if unsaved is None
            else "yes (hostseal config autobackup)"
            if unsaved
            else "no"
        )
    )


@config.command()
@_live_option
@json_option
@click.pass_context
def status(ctx: click.Context, live: Path, as_json: bool) -> None:
    """Mode, requirements, recovery key IDs, sealed PCRs, last saved, adopted paths and whether
    their live copies have unsaved changes."""
    st = manager.status(_ctx(ctx))
    adopted = inplace.status(live)
    if as_json:
        echo_json({**st, "adopted": adopted})
        return
    click.echo(f"   Mode: {st['mode']} ({st['protection']})")
    click.echo(f"   Require Secure Boot: {str(st['require_secure_boot']).lower()}")
    click.echo(f"   Require Exec Installed Only: {str(st['require_exec_installed_only']).lower()}")
    click.echo(f"   Recovery Key IDs: {', '.join(st['recovery_key_ids']) or 'none'}")  # type: ignore[arg-type]
    sealed = st["sealed_pcrs"]
    click.echo(
        f"   Sealed PCRs: {', '.join(map(str, sealed)) if sealed else 'none'}"  # type: ignore[call-overload]
        + (f" ({st['pcr_bank']})" if sealed else "")
    )
    click.echo(f"   Last Saved: {st['last_saved']} (generation {st['generation']})")
    _adopted_lines(adopted)
    _notices(st["notices"])  # type: ignore[arg-type]


@config.command()
@click.option(
    "--from",
    "sources",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="A directory to include (repeatable). Without --from: save the live copies of the "
    "adopted paths (as hostseal config autobackup).",
)
@_live_option
@json_option
@click.pass_context
def save(ctx: click.Context, sources: tuple[Path, ...], live: Path, as_json: bool) -> None:
    """Pack the directories and seal them. Creates the bundle on first use: mode TPM when a
    usable TPM is present, else NONE, with one recovery key. The adopted paths are kept."""
    if not sources:
        ctx.invoke(autobackup, live=live, as_json=as_json)
        return
    out = manager.save(_ctx(ctx), list(sources))
    if as_json:
        echo_json(
            {"generation": out.info.generation, "mode": out.info.mode.value, "notices": out.notices}
        )
        return
    click.echo(
        f"Configuration saved (generation {out.info.generation}, mode {out.info.mode.value})."
    )
    _notices(out.notices)


@config.command("set")
@click.option("--mode", type=click.Choice(["tpm", "none"], case_sensitive=False))
@click.option("--require-secure-boot/--no-require-secure-boot", default=None)
@click.option("--require-exec-installed-only/--no-require-exec-installed-only", default=None)
@click.pass_context
def set_(
    ctx: click.Context,
    mode: str | None,
    require_secure_boot: bool | None,
    require_exec_installed_only: bool | None,
) -> None:
    """Change the mode and requirements and re-seal; refuses what the host can't satisfy now."""
    out = manager.set_policy(
        _ctx(ctx),
        Mode(mode.upper()) if mode else None,
        require_secure_boot,
        require_exec_installed_only,
    )
    click.echo(
        f"Mode {out.info.mode.value}, Require Secure Boot "
        f"{str(out.info.requirements.require_secure_boot).lower()}, Require Exec Installed Only "
        f"{str(out.info.requirements.require_exec_installed_only).lower()}."
    )
    _notices(out.notices)


@config.command(
    help="Restore the configuration into DIR (the boot-time restore). Exit code 3 on a security "
    "violation. " + _KEY_HELP
)
@click.option(
    "--to",
    "dest",
    type=click.Path(path_type=Path),
    help="An empty or new directory on a tmpfs (e.g. under /run). With --mount: default "
    "/run/hostseal/config.",
)
@click.option(
    "--mount",
    is_flag=True,
    help="The boot-time restore: also bind-mount every adopted path over its empty "
    "placeholder (run by hostseal-unlock.service).",
)
@_key_options
@click.option(
    "--allow-disk",
    is_flag=True,
    help="Allow a --to directory that is not on tmpfs (the configuration is then on "
    "disk in clear).",
)
@json_option
@click.pass_context
def unlock(
    ctx: click.Context,
    dest: Path | None,
    mount: bool,
    recovery_prompt: bool,
    recovery_key_file: str | None,
    allow_disk: bool,
    as_json: bool,
) -> None:
    if dest is None:
        if not mount:
            raise click.UsageError("Say where to restore the configuration: --to DIR.")
        dest = inplace.RUNTIME_CONFIG
    if mount:
        _require_tmpfs(dest, "the configuration")
        _unlock_mounted(ctx, dest, _read_key(recovery_prompt, recovery_key_file), as_json)
        return
    target = dest if dest.exists() else dest.parent
    if not allow_disk and not _memory_backed(target):
        raise HostsealError(
            f"{dest} is not on a tmpfs: the decrypted configuration would be written to disk in "
            "clear.",
            "Unlock into a directory under /run (or /dev/shm), or add --allow-disk if that is "
            "really what you want.",
        )
    out = manager.unlock(_ctx(ctx), dest, _read_key(recovery_prompt, recovery_key_file))
    if as_json:
        echo_json(
            {
                "unlocked_to": str(dest),
                "mode": out.info.mode.value,
                "resealed": out.resealed,
                "notices": out.notices,
            }
        )
        return
    click.echo(f"Configuration restored to {dest}.")
    _notices(out.notices)


def _unlock_mounted(ctx: click.Context, live: Path, secret: bytes | None, as_json: bool) -> None:
    """``unlock --mount``. On a security violation the console's first line is ESXi's headline
    itself (the general error report would put "Error: " before it), then the causes and the
    remedy; the exit code is 3 as for every security violation."""
    try:
        out = inplace.mount(_ctx(ctx), live, secret)
    except SecurityViolation as err:
        if as_json:
            raise
        click.echo(err.message, err=True)
        click.echo(f"What to do: {err.remedy}", err=True)
        click.echo(
            "At the emergency shell: hostseal config unlock --mount --recovery-key (it restores, "
            "mounts and seals to this host again), then systemctl default to go on booting.",
            err=True,
        )
        ctx.exit(err.exit_code)
    if as_json:
        echo_json(
            {
                "unlocked_to": str(live),
                "mounted": out.mounted,
                "adopted": out.paths,
                "resealed": out.unlocked.resealed if out.unlocked else None,
                "notices": out.notices,
            }
        )
        return
    click.echo(f"Configuration restored to {live}.")
    for path in out.mounted:
        click.echo(f"Mounted {path}")
    _notices(out.notices)


def _report_inplace(what: str, out: inplace.InPlaceOutcome, as_json: bool) -> None:
    if as_json:
        echo_json(
            {
                "paths": out.paths,
                "mounted": out.mounted,
                "saved": out.saved,
                "generation": out.generation,
                "notices": out.notices,
            }
        )
        return
    for path in out.paths:
        click.echo(f"{what} {path}" + (" (mounted)" if path in out.mounted else ""))
    if out.saved:
        click.echo(f"Sealed as generation {out.generation}.")
    _notices(out.notices)


@config.command()
@click.argument("paths", nargs=-1)
@click.option(
    "--regenerate-ssh-keys",
    is_flag=True,
    help="Make new SSH host keys (rsa, ecdsa, ed25519) directly in the sealed set, replacing "
    "the ones on disk, which may survive in old disk blocks and so are no longer trusted.",
)
@click.option(
    "--ssh-dir",
    type=click.Path(path_type=Path),
    default=Path("/etc/ssh"),
    show_default=True,
    help="Where sshd reads its host keys (for --regenerate-ssh-keys).",
)
@_mount_option
@_live_option
@json_option
@click.pass_context
def adopt(
    ctx: click.Context,
    paths: tuple[str, ...],
    regenerate_ssh_keys: bool,
    ssh_dir: Path,
    mount: bool,
    live: Path,
    as_json: bool,
) -> None:
    """Protect files or directories in place: seal them into the configuration under their
    absolute paths (with owner and mode), then remove the plaintext from the disk, leaving an
    empty placeholder over which the live copy is mounted (now, and at every boot).

    Nothing is removed unless the new configuration is written and proven to unlock. Adopt
    the directory of files that programs replace by renaming (a mounted file can only be
    written in place), e.g. /etc/libvirt/secrets."""
    if not paths and not regenerate_ssh_keys:
        raise click.UsageError("Name the paths to adopt, or give --regenerate-ssh-keys.")
    _require_tmpfs(live, "the live copies")
    host = _ctx(ctx)
    out = inplace.InPlaceOutcome()
    if paths:
        out = inplace.adopt(host, list(paths), live, mount=mount)
    if regenerate_ssh_keys:
        more = inplace.adopt_new_ssh_host_keys(host, live, mount=mount, ssh_dir=ssh_dir)
        out.paths += more.paths
        out.mounted += more.mounted
        out.generation, out.saved = more.generation, True
        out.notices += [n for n in more.notices if n not in out.notices]
    _report_inplace("Adopted", out, as_json)


@config.command()
@click.argument("path")
@_mount_option
@_live_option
@json_option
@click.pass_context
def release(ctx: click.Context, path: str, mount: bool, live: Path, as_json: bool) -> None:
    """Give an adopted path back: write it to disk (its live copy, atomically) and remove it
    from the sealed configuration."""
    _report_inplace("Released", inplace.release(_ctx(ctx), path, live, mount=mount), as_json)


@config.command()
@_live_option
@json_option
@click.pass_context
def autobackup(ctx: click.Context, live: Path, as_json: bool) -> None:
    """Seal the live copies of the adopted paths again if they changed (ESXi's auto-backup; run
    hourly by hostseal-autobackup.timer and at shutdown)."""
    out = inplace.autobackup(_ctx(ctx), live)
    if as_json:
        _report_inplace("", out, as_json)
        return
    if out.saved:
        click.echo(f"Changes saved (generation {out.generation}).")
    elif out.paths:
        click.echo("No changes to save.")
    _notices(out.notices)


@config.command()
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.pass_context
def backup(ctx: click.Context, out: Path) -> None:
    """Write a backup of the sealed configuration (it stays bound to this host's TPM)."""
    info = manager.backup(_ctx(ctx), out)
    click.echo(f"Backup of generation {info.generation} written to {out}.")


@config.command(
    help="Restore a backup (a file written by hostseal config backup). A TPM-sealed backup "
    "restores only where its TPM is, unless a recovery key is given. " + _KEY_HELP
)
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_key_options
@click.pass_context
def restore(
    ctx: click.Context, backup_file: Path, recovery_prompt: bool, recovery_key_file: str | None
) -> None:
    out = manager.restore(_ctx(ctx), backup_file, _read_key(recovery_prompt, recovery_key_file))
    _notices(out.notices)


def _slots_rewrapped(info: EncryptionInfo) -> str:
    parts = []
    if info.tpm_slot is not None:
        pcrs = ", ".join(map(str, info.tpm_slot.pcrs))
        parts.append(
            f"the TPM slot (PCRs {pcrs}, {info.tpm_slot.pcr_bank})"
            if pcrs
            else "the TPM slot (bound to this TPM, no PCRs)"
        )
    if info.none_slot is not None:
        parts.append(f"the NONE-mode slot ({info.none_slot.protection})")
    n = len(info.recovery_slots)
    ids = ", ".join(s.formatted_id for s in info.recovery_slots)
    parts.append(f"{n} recovery slot{'' if n == 1 else 's'}" + (f" ({ids})" if n else ""))
    return ", ".join(parts)


@config.command()
@json_option
@click.pass_context
def rekey(ctx: click.Context, as_json: bool) -> None:
    """Re-encrypt the configuration under a new data key now and wrap it again in every slot.

    Every save already does this; use it after a recovery key or an escrow copy was exposed, so
    that the data key of any older copy opens nothing from now on."""
    out = manager.rekey(_ctx(ctx))
    info = out.info
    if as_json:
        echo_json(
            {
                "generation": info.generation,
                "recovery_key_ids": [s.formatted_id for s in info.recovery_slots],
                "notices": out.notices,
            }
        )
        return
    click.echo(f"New data key for generation {info.generation}.")
    click.echo(f"Re-wrapped: {_slots_rewrapped(info)}.")
    click.echo(
        "Copies saved before (backups) open only with the keys they held; none opens this "
        "generation or a later one."
    )
    _notices(out.notices)


@config.command("install-boot-unit")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Root of the file system to install into.",
)
@click.pass_context
def install_boot_unit(ctx: click.Context, root: Path) -> None:
    """Install and enable the systemd units: the unlock at boot (it stops the boot in the
    emergency target on a security violation, and saves at shutdown) and the hourly
    auto-backup timer."""
    s = settings_of(ctx)
    exe = shutil.which("hostseal") or os.path.abspath(sys.argv[0])
    for path in bootunit.install(root, exe, s.bootbank, s.tcti):
        click.echo(f"Wrote {path}")


@click.group()
@click.option(
    "--bootbank",
    type=click.Path(path_type=Path),
    help="Where the sealed configuration lives (HOSTSEAL_BOOTBANK).",
)
@click.pass_context
def recovery(ctx: click.Context, bootbank: Path | None) -> None:
    """Recovery keys: the way back when the TPM won't release the key. Every read is audited."""
    from hostseal.cli._common import AppContext

    ctx.obj = AppContext(settings_of(ctx).with_overrides(bootbank=bootbank))


@recovery.command("list")
@click.option(
    "--reason",
    help="Why the keys are read (audited with your user name). Asked for when interactive.",
)
@json_option
@click.pass_context
def recovery_list(ctx: click.Context, reason: str | None, as_json: bool) -> None:
    """Recovery ID and Key of each recovery key (esxcli ... encryption recovery list).

    A reveal: the read is written to the bootbank's audit log with the reason and the user."""
    if reason is None and sys.stdin.isatty():
        reason = click.prompt(
            "Reason for reading the recovery keys", default="", show_default=False
        )
    keys = manager.recovery_list(_ctx(ctx), reason or "")
    if as_json:
        echo_json([{"recovery_id": k.formatted_id, "key": k.formatted_key} for k in keys])
        return
    click.echo(f"{'Recovery ID':<40}  Key")
    for k in keys:
        click.echo(f"{k.formatted_id:<40}  {k.formatted_key}")


@recovery.command("rotate")
@click.option("--id", "recovery_id", help="The Recovery ID to replace (when there are several).")
@json_option
@click.pass_context
def recovery_rotate(ctx: click.Context, recovery_id: str | None, as_json: bool) -> None:
    """Replace a recovery key with a new one; the old one stops working.

    Two steps: the new key is added (both work) and shown, then the old one is removed, each
    under a new data key. Interrupted, the old key still works: run it again to finish."""

    def show(new: RecoveryKey) -> None:
        try:
            if as_json:
                echo_json({"recovery_id": new.formatted_id, "key": new.formatted_key})
            else:
                click.echo(f"New recovery key {new.formatted_id}:\n{new.formatted_key}")
            _shown_durably()
        except OSError as err:
            _silence_stdout()
            raise HostsealError(
                f"The new recovery key could not be shown (standard output: {err.strerror}), so "
                "the rotation stopped half-way: the old recovery key still works.",
                "Run hostseal recovery rotate again with a working terminal or output file; it "
                "finishes the rotation with a key that is shown.",
            ) from None

    manager.recovery_rotate(
        _ctx(ctx), parse_recovery_id(recovery_id) if recovery_id else None, show
    )
    if not as_json:
        click.echo("Save it now, away from this host. The old key no longer works.", err=True)


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that exiting does not fail on it again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def _shown_durably() -> None:
    """Flush the key to standard output (and to disk, when it is a file) before the old key is
    removed; raises if it could not be written."""
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): the flush was the showing
    if os.path.isfile(f"/proc/self/fd/{fd}"):
        os.fsync(fd)
