"""Write the files of the Debian package that come from hostseal's own code, under a package
root (``debian/hostseal`` during the build):

- the systemd units (agent, service, unlock, auto-backup service and timer), from
  :mod:`hostseal.systemd` and :mod:`hostseal.secureconfig.bootunit` with the installed binary
  ``/usr/bin/hostseal`` (one source of unit text; the package installs them, enables none);
- the man pages, one per command (``hostseal(1)``, ``hostseal-agent(1)``,
  ``hostseal-agent-run(1)`` ...), made by click-man from the click commands themselves;
- the bash completion, click's own (``_HOSTSEAL_COMPLETE=bash_source``).

Run by debian/rules with the package's virtual environment's Python (so the code rendered is the
code installed) and click-man on PYTHONPATH:  python packaging/render.py debian/hostseal
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click

EXE = "/usr/bin/hostseal"
UNIT_DIR = Path("lib/systemd/system")
MAN_DIR = Path("usr/share/man/man1")
COMPLETION = Path("usr/share/bash-completion/completions/hostseal")


def units() -> dict[str, str]:
    """Each unit's file name and text, naming /usr/bin/hostseal. The agent's and the service's
    units give no --server, --ca, --interval or --bind: they come from
    /etc/hostseal/hostseal.toml. The service names its data directory (its sandbox allows
    writing only there); the unlock and auto-backup units name the default bootbank (the
    unlock unit's start condition names its file) and no TPM: the file's ``tcti`` decides."""
    from hostseal import systemd
    from hostseal.client.defaults import DEFAULT_SERVER_DATA
    from hostseal.secureconfig import bootunit
    from hostseal.settings import DEFAULT_BOOTBANK

    return {
        systemd.AGENT_UNIT: systemd.agent_unit(EXE, None, None, None),
        systemd.SERVER_UNIT: systemd.server_unit(EXE, DEFAULT_SERVER_DATA, None),
        **bootunit.unit_files(EXE, DEFAULT_BOOTBANK, None),
    }


def commands(
    command: click.Command, parent: click.Context | None = None, name: str = "hostseal"
) -> Iterator[click.Context]:
    """A context for ``command`` and for every visible command under it, depth first."""
    ctx = click.Context(command, info_name=name, parent=parent)
    yield ctx
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                yield from commands(sub, ctx, sub_name)


def man_pages(version: str) -> dict[str, str]:
    """One man page per command, keyed by file name (``hostseal-agent-run.1``)."""
    from click_man.core import generate_man_page

    from hostseal.cli.main import cli

    return {
        ctx.command_path.replace(" ", "-") + ".1": generate_man_page(ctx, version=version)
        for ctx in commands(cli)
    }


def completion() -> str:
    """click's bash completion script for ``hostseal``."""
    done = subprocess.run(
        [sys.executable, "-m", "hostseal.cli"],
        env={**os.environ, "_HOSTSEAL_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        check=True,
    )
    if "_hostseal_completion" not in done.stdout:
        raise SystemExit(f"render: no bash completion came out: {done.stdout!r} {done.stderr!r}")
    return done.stdout


def write(root: Path, relative: Path, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def main(root: Path) -> None:
    from hostseal import __version__

    for name, text in units().items():
        write(root, UNIT_DIR / name, text)
    for name, text in man_pages(__version__).items():
        write(root, MAN_DIR / name, text)
    write(root, COMPLETION, completion())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
