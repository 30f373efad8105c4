"""Lab hosts with a sealed configuration, and the table of which scenario shows which state of
which live check (every non-passing state a check can report is shown by one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostseal import lab
from hostseal.doctor import CheckResult, HostState, KnowledgeBase, LogInput, evaluate, scan
from hostseal.doctor.checks import REASONS
from hostseal.doctor.observe import observe
from hostseal.errors import HostsealError
from hostseal.lab import BootConfig, LabHost
from hostseal.lab.firmware import DEFAULT_CMDLINE
from hostseal.secureconfig import manager

EXEC_CMDLINE = DEFAULT_CMDLINE + " lockdown=integrity ima_appraise=enforce ima_policy=appraise_tcb"

# (check, state, reason) -> the scenario (test) that shows it.
SCENARIOS: dict[tuple[str, str, str | None], str] = {
    ("tpm", "fail", "unavailable"): "tpm-identity",
    ("tpm", "fail", "busy"): "synthetic",
    ("tpm", "fail", "tpm-1.2"): "synthetic",
    ("sha256-bank", "fail", None): "sha1-host",
    ("secure-boot", "fail", None): "violations",
    ("secure-boot", "warn", "unknown"): "secure-boot-off-host",
    ("drtm", "warn", None): "synthetic",
    ("lockout", "fail", None): "sha1-host",
    ("eventlog", "fail", "mismatch"): "secure-boot-off-host",
    ("eventlog", "fail", "unreadable"): "secure-boot-off-host",
    ("eventlog", "fail", "absent"): "no-eventlog-host",
    ("config", "warn", "no-bundle"): "sha1-host",
    ("config", "warn", "mode-none"): "sha1-host",
    ("config", "warn", "fallback"): "sha1-host",
    ("config", "fail", "corrupt"): "sha1-host",
    ("requirements", "fail", "secure-boot"): "violations",
    ("requirements", "fail", "exec-installed-only"): "violations",
    ("requirements", "warn", "not-enforced"): "secure-boot-off-host",
    ("unlock", "fail", "tpm-unavailable"): "tpm-identity",
    ("unlock", "fail", "tpm-replaced"): "tpm-identity",
    ("unlock", "fail", "tpm-cleared"): "tpm-identity",
    ("unlock", "fail", "secure-boot"): "violations",
    ("unlock", "fail", "pcr-policy"): "violations",
    ("unlock", "fail", "requirements"): "violations",
    ("unlock", "fail", "eventlog"): "secure-boot-off-host",
    ("unlock", "warn", "lockout"): "secure-boot-off-host",
    ("unlock", "warn", "tpm-error"): "secure-boot-off-host",
    ("recovery-keys", "fail", "none"): "secure-boot-off-host",
    ("escrow", "fail", "not-escrowed"): "violations",
    ("escrow", "warn", "listed-only"): "violations",
    ("agent", "warn", "not-enrolled"): "violations",
}

REPORTABLE = {
    (check, state, reason)
    for check, states in REASONS.items()
    for state, reasons in states.items()
    for reason in reasons
}


@dataclass
class Seen:
    """Records the check states a scenario produced; ``verify`` checks its rows of SCENARIOS."""

    scenario: str
    kb: KnowledgeBase
    states: set[tuple[str, str, str | None]] = field(default_factory=set)

    def add(self, results: list[CheckResult]) -> dict[str, CheckResult]:
        for r in results:
            if r.state in ("warn", "fail"):
                self.states.add((r.check, r.state, r.reason))
                assert r.finding is not None, r  # every non-passing state is explained
                assert r.remedy == list(r.finding.remedy)
        return {r.check: r for r in results}

    def verify(self) -> None:
        mine = {k for k, v in SCENARIOS.items() if v == self.scenario}
        assert mine <= self.states, mine - self.states


@dataclass
class Host:
    """A lab host, its bootbank, its agent directory and a configuration to seal."""

    lab_dir: Path
    host: LabHost
    root: Path
    kb: KnowledgeBase

    @classmethod
    def start(cls, lab_dir: Path, root: Path, kb: KnowledgeBase, name: str, **kw: object) -> Host:
        boot = kw.pop("boot", None)
        host = lab.start(lab_dir, name, boot, **kw)  # type: ignore[arg-type]
        config = root / "config"
        (config / "ssh").mkdir(parents=True)
        (config / "ssh" / "sshd_config").write_text("PermitRootLogin no\n")
        return cls(lab_dir, host, root, kb)

    @property
    def bootbank(self) -> Path:
        return self.root / "bootbank"

    @property
    def agent_dir(self) -> Path:
        return self.root / "agent"

    @property
    def ctx(self) -> manager.HostContext:
        return manager.HostContext(self.host.tcti, self.host.eventlog, self.bootbank)

    def save(self) -> manager.Outcome:
        return manager.save(self.ctx, [self.root / "config"])

    def observe(self, *, eventlog: Path | None = None, probe: bool = True) -> HostState:
        return observe(
            self.host.tcti,
            eventlog or self.host.eventlog,
            self.bootbank,
            self.agent_dir,
            probe=probe,
        )

    def checks(self, seen: Seen, **kw: object) -> dict[str, CheckResult]:
        return seen.add(evaluate(self.observe(**kw), self.kb))  # type: ignore[arg-type]

    def reboot(self, **changes: object) -> None:
        self.host = lab.reboot(self.lab_dir, self.host.name, self.host.boot.with_changes(**changes))

    def boot_config(self) -> BootConfig:
        return self.host.boot

    def unlock_error(self, target: Path) -> HostsealError:
        """The error a real unlock raises now (it must fail), after the pre-flight."""
        try:
            manager.unlock(self.ctx, target)
        except HostsealError as err:
            assert not target.exists()
            return err
        raise AssertionError("the unlock succeeded")

    def explained(self, text: str) -> list[str]:
        """The findings the log scanner sees in ``text`` (hostseal's own output)."""
        return [f.finding.id for f in scan([LogInput("hostseal.log", text)], self.kb)]


def printed(err: HostsealError) -> str:
    return f"Error: {err.message}\nWhat to do: {err.remedy}\n"
