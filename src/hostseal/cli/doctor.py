"""``hostseal doctor``: from symptom to cause to remedy, for hostseal hosts and ESXi hosts.

* ``hostseal doctor``                       live checks of this host, with the unlock pre-flight;
* ``hostseal doctor --log FILE... | -``     scan ESXi / vCenter / hostseal logs and PSOD text;
* ``hostseal doctor before-board-swap``     the checklist before a board or TPM swap, GO / NO-GO.

Exit codes: checks 1 if any fails; logs 1 if a finding of severity critical or error is found;
before-board-swap 1 for NO-GO.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hostseal.agent.state import default_state_dir
from hostseal.cli._common import echo_json, settings_of
from hostseal.settings import Settings

if TYPE_CHECKING:  # loaded when the doctor runs: the checks reach the TPM stack
    from rich.console import Console
    from rich.text import Text

    import hostseal.doctor as dr
    from hostseal.doctor.boardswap import SwapReport
    from hostseal.doctor.checks import CheckResult
    from hostseal.doctor.knowledge import Finding
    from hostseal.doctor.logscan import LogFinding

_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "fail": "bold red",
    "skip": "dim",
    "critical": "bold red",
    "error": "red",
    "warning": "yellow",
    "info": "cyan",
}
SERIOUS = ("critical", "error")


class _DoctorGroup(click.Group):
    """Lets ``--log`` take several files: ``--log a b`` means ``--log a --log b``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_log_args(args, set(self.commands)))


def expand_log_args(args: list[str], commands: set[str]) -> list[str]:
    """Repeat ``--log`` before each file that follows it (up to the next option)."""
    out: list[str] = []
    collecting, taken = False, 0
    for arg in args:
        is_value = arg == "-" or not arg.startswith("-")
        if collecting and is_value and not (taken and arg in commands):
            out += ["--log", arg]
            taken += 1
            continue
        if collecting and not taken:
            out.append("--log")  # no file: click reports the missing value
        collecting = arg == "--log"
        taken = 0
        if not collecting:
            out.append(arg)
    if collecting and not taken:
        out.append("--log")
    return out


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


@click.group(name="doctor", cls=_DoctorGroup, invoke_without_command=True)
@click.option(
    "--log",
    "logs",
    multiple=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="FILE...",
    help="Scan these logs instead of checking the host: vmkernel.log, vmkwarning.log, "
    "hostd.log, vpxd.log, PSOD screen text, hostseal's messages; '-' reads standard input.",
)
@click.option(
    "--eventlog",
    type=click.Path(path_type=Path),
    help="This boot's event log. Environment: HOSTSEAL_EVENTLOG.",
)
@click.option(
    "--bootbank",
    type=click.Path(path_type=Path),
    help="Where the sealed configuration lives. Environment: HOSTSEAL_BOOTBANK.",
)
@click.option(
    "--agent-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The attestation agent's state directory. Environment: HOSTSEAL_AGENT_DIR; default "
    "/var/lib/hostseal/agent.",
)
@click.option(
    "--no-tpm-probe",
    is_flag=True,
    help="Never ask the TPM to unseal during the pre-flight (a cleared TPM then goes unseen).",
)
@click.option(
    "--lang",
    envvar="HOSTSEAL_LANG",
    metavar="LANG",
    default="en",
    show_default=True,
    help="Language of the findings (falls back to English). Environment: HOSTSEAL_LANG.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def doctor(
    ctx: click.Context,
    logs: tuple[Path, ...],
    eventlog: Path | None,
    bootbank: Path | None,
    agent_dir: Path | None,
    no_tpm_probe: bool,
    lang: str,
    as_json: bool,
) -> None:
    """Find out what is wrong and what to do: live checks of this host (TPM, SHA-256 bank,
    Secure Boot, TXT, lockout, event log, the sealed configuration and whether it would unlock
    on this boot, recovery keys and their escrow, the agent), or, with --log, known problems in
    ESXi, vCenter and hostseal logs. Exit code 1 when a check fails or a serious problem is
    found."""
    import hostseal.doctor as dr

    settings = settings_of(ctx).with_overrides(eventlog=eventlog, bootbank=bootbank)
    ctx.obj = _Options(settings, agent_dir or default_state_dir(), not no_tpm_probe, as_json)
    if ctx.invoked_subcommand is not None:
        if logs:
            raise click.UsageError("--log cannot be combined with a sub-command.")
        return
    kb = dr.load_kb(lang)
    if logs:
        findings, inputs = _scan(logs, kb)
        _print_logs(findings, inputs, as_json)
        if any(f.finding.severity in SERIOUS for f in findings):
            ctx.exit(1)
        return
    opts: _Options = ctx.obj
    _, results = dr.run(
        kb,
        settings.tcti,
        settings.eventlog,
        settings.bootbank,
        opts.agent_dir,
        probe=opts.probe,
    )
    _print_checks(results, kb, settings, as_json)
    if dr.failed(results):
        ctx.exit(1)


@dataclass
class _Options:
    """The group's options, for the sub-command."""

    settings: Settings
    agent_dir: Path
    probe: bool
    as_json: bool


def _scan(
    logs: tuple[Path, ...], kb: dr.KnowledgeBase
) -> tuple[list[LogFinding], list[tuple[str, int]]]:
    import hostseal.doctor as dr

    inputs = []
    for path in logs:
        if str(path) == "-":
            raw = sys.stdin.buffer.read()
            name = "-"
        else:
            try:
                raw = path.read_bytes()
            except OSError as err:
                raise click.BadParameter(
                    f"cannot read {path}: {err.strerror}", param_hint="--log"
                ) from None
            name = str(path)
        inputs.append(dr.LogInput(name, raw.decode("utf-8", "replace")))
    sizes = [(i.name, i.text.count("\n") + (0 if i.text.endswith("\n") else 1)) for i in inputs]
    return dr.scan(inputs, kb), sizes


# -- output ----------------------------------------------------------------------------------


def _block(console: Console, text: Text, indent: int) -> None:
    """Print ``text`` indented, wrapped lines indented too."""
    from rich.padding import Padding

    console.print(Padding(text, (0, 0, 0, indent)))


def _explain(console: Console, finding: Finding | None, steps: list[str] | tuple[str, ...]) -> None:
    from rich.text import Text

    if finding is not None:
        _block(console, Text("Why: ", style="bold") + Text(finding.cause), 2)
    if steps:
        _block(console, Text("What to do:", style="bold"), 2)
        for number, step in enumerate(steps, 1):
            _block(console, Text(f"{number}. {step}"), 4)
    if finding is not None and finding.references:
        _block(console, Text("See: " + ", ".join(finding.references), style="dim"), 2)


def _heading(console: Console, mark: str, title: str) -> None:
    from rich.text import Text

    console.print(Text(f"{mark.upper()} ", style=_STYLE[mark]) + Text(title, style="bold"))


def _print_checks(
    results: list[CheckResult], kb: dr.KnowledgeBase, settings: Settings, as_json: bool
) -> None:
    from rich.table import Table
    from rich.text import Text

    import hostseal.doctor as dr

    summary = {s: sum(r.state == s for r in results) for s in ("pass", "warn", "fail", "skip")}
    if as_json:
        echo_json(
            {
                "tcti": settings.tcti,
                "eventlog": str(settings.eventlog),
                "bootbank": str(settings.bootbank),
                "checks": [r.to_dict() for r in results],
                "summary": summary,
                "failed": dr.failed(results),
            }
        )
        return
    console = _console()
    console.print(
        Text(f"hostseal doctor: TPM {settings.tcti}, bootbank {settings.bootbank}", style="bold")
    )
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(style="bold")
    table.add_column()
    for r in results:
        table.add_row(Text(r.state.upper(), style=_STYLE[r.state]), r.label, Text(r.detail))
    console.print(table)
    for finding, checks in dr.explanations(results, kb):
        console.print()
        worst = "fail" if any(c.state == "fail" for c in checks) else "warn"
        _heading(console, worst, f"{finding.title} [{finding.id}]")
        _block(console, Text("Seen by: " + ", ".join(c.label for c in checks)), 2)
        _explain(console, finding, finding.remedy)
    for r in results:
        if r.state in ("warn", "fail") and r.finding is None:
            console.print()
            _heading(console, r.state, r.label)
            _explain(console, None, r.remedy)
    console.print()
    console.print(
        ", ".join(f"{n} {s}" for s, n in summary.items())
        + (": something failed." if summary["fail"] else ".")
    )


def _print_logs(findings: list[LogFinding], inputs: list[tuple[str, int]], as_json: bool) -> None:
    from rich.text import Text

    if as_json:
        echo_json(
            {
                "inputs": [{"name": n, "lines": c} for n, c in inputs],
                "findings": [f.to_dict() for f in findings],
            }
        )
        return
    console = _console()
    lines = sum(c for _, c in inputs)
    if not findings:
        console.print(f"No known problem in {lines} lines of {len(inputs)} log(s).")
        return
    plural = "" if len(findings) == 1 else "s"
    console.print(
        Text(f"{len(findings)} finding{plural} in {lines} lines of {len(inputs)} log(s):"),
        style="bold",
    )
    for f in findings:
        console.print()
        _heading(console, f.finding.severity, f"{f.finding.title} [{f.finding.id}]")
        more = f" (of {f.matches} matching lines)" if f.matches > len(f.evidence) else ""
        _block(console, Text(f"Evidence{more}:", style="bold"), 2)
        for e in f.evidence:
            _block(console, Text(f"{e.source}:{e.line}: {e.text}"), 4)
        _explain(console, f.finding, f.finding.remedy)


@doctor.command("before-board-swap")
@click.option(
    "--backup",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A configuration backup (hostseal config backup --out FILE) to check: it must be the "
    "current generation.",
)
@click.option(
    "--recovery-key-file",
    metavar="FILE",
    help="The saved recovery key, to check that it opens the configuration ('-': stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def before_board_swap(
    ctx: click.Context, backup: Path | None, recovery_key_file: str | None, as_json: bool
) -> None:
    """The checklist before the system board or TPM is replaced, run: TPM state, recovery keys
    (count, IDs) and whether one is saved (escrowed, or --recovery-key-file opens it), a backup
    of the current configuration (--backup), then GO or NO-GO with what is missing and the
    steps for after the swap. Exit code 1 for NO-GO."""
    import hostseal.doctor as dr

    opts: _Options = ctx.obj
    as_json = as_json or opts.as_json
    key_text = None
    if recovery_key_file is not None:
        try:
            key_text = (
                sys.stdin.read()
                if recovery_key_file == "-"
                else Path(recovery_key_file).read_text()
            )
        except OSError as err:
            raise click.BadParameter(
                f"cannot read {recovery_key_file}: {err.strerror}", param_hint="--recovery-key-file"
            ) from None
    s = opts.settings
    state = dr.observe(s.tcti, s.eventlog, s.bootbank, opts.agent_dir, probe=opts.probe)
    report = dr.before_board_swap(
        state,
        backup=backup,
        recovery_key_text=key_text,
        recovery_key_source=recovery_key_file or "",
    )
    _print_swap(report, as_json)
    if not report.go:
        ctx.exit(1)


def _print_swap(report: SwapReport, as_json: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    if as_json:
        echo_json(report.to_dict())
        return
    console = _console()
    console.print(Text("Before the board / TPM swap:", style="bold"))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(style="bold")
    table.add_column()
    for item in report.items:
        if not item.gating:
            mark = Text("INFO", style="cyan")
        elif item.ok:
            mark = Text("OK", style="green")
        else:
            mark = Text("MISSING", style="bold red")
        table.add_row(mark, item.label, Text(item.detail))
    console.print(table)
    console.print()
    if report.go:
        console.print(Text("GO", style="bold green") + Text(": the swap can go ahead."))
    else:
        console.print(Text("NO-GO", style="bold red") + Text(": before the swap,"))
        for todo in report.missing:
            _block(console, Text(f"- {todo}"), 2)
    if report.after:
        console.print()
        console.print(Text("After the swap:", style="bold"))
        for number, step in enumerate(report.after, 1):
            _block(console, Text(f"{number}. {step}"), 2)
