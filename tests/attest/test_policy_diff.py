"""What a policy change loosens or tightens, field by field, in plain words (the audit's summary).

One table row per field of :class:`ReferencePolicy` (and per kind of change of it): the policy
before, the policy after, and every change expected with its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hostseal.attest.policy import AllowedApplication, ReferencePolicy, capture_policy
from hostseal.attest.policy_diff import (
    LOOSENED,
    NEUTRAL,
    TIGHTENED,
    PolicyChange,
    diff_policies,
)
from hostseal.lab.firmware import BootConfig, measure_boot
from hostseal.measure import parse_event_log, replay

SHIM = AllowedApplication(bytes.fromhex("11" * 32), "\\EFI\\debian\\shimx64.efi")
GRUB = AllowedApplication(bytes.fromhex("22" * 32), "\\EFI\\debian\\grubx64.efi")
V0, V7, V7B = bytes.fromhex("a0" * 32), bytes.fromhex("a7" * 32), bytes.fromhex("b7" * 32)
S384 = bytes.fromhex("c7" * 48)
CMDLINE = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"


def policy(**changes: object) -> ReferencePolicy:
    """A strict baseline policy, with ``changes``."""
    fields: dict[str, object] = {
        "name": "gold",
        "description": "rack 12",
        "pcrs": {"sha256": {0: V0, 7: V7}},
        "boot_applications": (SHIM, GRUB),
        "require_secure_boot": True,
        "kernel_cmdlines": (CMDLINE,),
        "kernel_cmdline_required": ("lockdown=integrity",),
        "quote_pcrs": (0, 4, 7, 8),
        "quote_bank": "sha256",
    }
    fields.update(changes)
    return ReferencePolicy(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    before: ReferencePolicy | None
    after: ReferencePolicy
    expect: tuple[tuple[str, str, str], ...]  # (field, kind, text)


CASES = {
    "no change": Case(policy(), policy(), ()),
    "name": Case(policy(), policy(name="gold2"), (("name", NEUTRAL, "name: 'gold' → 'gold2'"),)),
    "description": Case(
        policy(),
        policy(description="rack 14"),
        (("description", NEUTRAL, "description: 'rack 12' → 'rack 14'"),),
    ),
    "secure boot no longer required": Case(
        policy(),
        policy(require_secure_boot=False),
        (("require_secure_boot", LOOSENED, "require_secure_boot: true → false"),),
    ),
    "secure boot now required": Case(
        policy(require_secure_boot=False),
        policy(),
        (("require_secure_boot", TIGHTENED, "require_secure_boot: false → true"),),
    ),
    "PCR 7 pin removed": Case(
        policy(),
        policy(pcrs={"sha256": {0: V0}}),
        (("pcrs.sha256.7", LOOSENED, "PCR 7 pin removed (sha256 a7a7a7a7a7a7…)"),),
    ),
    "PCR 7 pinned": Case(
        policy(pcrs={"sha256": {0: V0}}),
        policy(),
        (("pcrs.sha256.7", TIGHTENED, "PCR 7 pinned (sha256 a7a7a7a7a7a7…)"),),
    ),
    "PCR 7 expects another value": Case(
        policy(),
        policy(pcrs={"sha256": {0: V0, 7: V7B}}),
        (
            (
                "pcrs.sha256.7",
                NEUTRAL,
                "PCR 7 (sha256) expected value changed: a7a7a7a7a7a7… → b7b7b7b7b7b7…",
            ),
        ),
    ),
    "every pin removed": Case(
        policy(),
        policy(pcrs={}),
        (
            ("pcrs.sha256.0", LOOSENED, "PCR 0 pin removed (sha256 a0a0a0a0a0a0…)"),
            ("pcrs.sha256.7", LOOSENED, "PCR 7 pin removed (sha256 a7a7a7a7a7a7…)"),
        ),
    ),
    "pins moved to another bank": Case(
        policy(),
        policy(pcrs={"sha384": {7: S384}}, quote_bank="sha384"),
        (
            ("pcrs.sha256.0", LOOSENED, "PCR 0 pin removed (sha256 a0a0a0a0a0a0…)"),
            ("pcrs.sha256.7", LOOSENED, "PCR 7 pin removed (sha256 a7a7a7a7a7a7…)"),
            ("pcrs.sha384.7", TIGHTENED, "PCR 7 pinned (sha384 c7c7c7c7c7c7…)"),
            ("quote_bank", NEUTRAL, "quote_bank: sha256 → sha384"),
        ),
    ),
    "boot application allowed": Case(
        policy(boot_applications=(SHIM,)),
        policy(),
        (
            (
                "boot_applications",
                LOOSENED,
                "boot_applications: allowed \\EFI\\debian\\grubx64.efi (sha256 222222222222…)",
            ),
        ),
    ),
    "boot application no longer allowed": Case(
        policy(),
        policy(boot_applications=(SHIM,)),
        (
            (
                "boot_applications",
                TIGHTENED,
                "boot_applications: no longer allowed \\EFI\\debian\\grubx64.efi "
                "(sha256 222222222222…)",
            ),
        ),
    ),
    "boot application renamed": Case(
        policy(),
        policy(boot_applications=(SHIM, AllowedApplication(GRUB.sha256, None))),
        (
            (
                "boot_applications",
                NEUTRAL,
                "boot_applications: path of sha256 222222222222… '\\EFI\\debian\\grubx64.efi' "
                "→ none",
            ),
        ),
    ),
    "allow-list removed": Case(
        policy(),
        policy(boot_applications=()),
        (
            (
                "boot_applications",
                LOOSENED,
                "boot_applications: allow-list removed (was 2 applications): any boot "
                "application passes",
            ),
        ),
    ),
    "allow-list introduced": Case(
        policy(boot_applications=()),
        policy(),
        (
            (
                "boot_applications",
                TIGHTENED,
                "boot_applications: allow-list added: only 2 applications may boot",
            ),
        ),
    ),
    "command line allowed": Case(
        policy(),
        policy(kernel_cmdlines=(CMDLINE, f"{CMDLINE} init=/bin/sh")),
        (
            (
                "kernel_cmdlines",
                LOOSENED,
                f"kernel_cmdlines: added '{CMDLINE} init=/bin/sh'",
            ),
        ),
    ),
    "command line no longer allowed": Case(
        policy(kernel_cmdlines=(CMDLINE, "ro")),
        policy(),
        (("kernel_cmdlines", TIGHTENED, "kernel_cmdlines: removed 'ro'"),),
    ),
    "command-line list removed": Case(
        policy(),
        policy(kernel_cmdlines=()),
        (
            (
                "kernel_cmdlines",
                LOOSENED,
                "kernel_cmdlines: list removed (was 1): any command line passes",
            ),
        ),
    ),
    "command-line list introduced": Case(
        policy(kernel_cmdlines=()),
        policy(),
        (("kernel_cmdlines", TIGHTENED, "kernel_cmdlines: only 1 command line may boot"),),
    ),
    "required setting dropped": Case(
        policy(),
        policy(kernel_cmdline_required=()),
        (
            (
                "kernel_cmdline_required",
                LOOSENED,
                "kernel_cmdline_required: 'lockdown=integrity' no longer required",
            ),
        ),
    ),
    "required setting added": Case(
        policy(),
        policy(kernel_cmdline_required=("lockdown=integrity", "ro")),
        (("kernel_cmdline_required", TIGHTENED, "kernel_cmdline_required: 'ro' now required"),),
    ),
    "PCRs no longer quoted": Case(
        policy(quote_pcrs=(0, 4, 7, 8, 9, 14)),
        policy(),
        (("quote_pcrs", LOOSENED, "quote_pcrs: PCR 9, 14 no longer quoted"),),
    ),
    "PCRs now quoted": Case(
        policy(),
        policy(quote_pcrs=(0, 4, 7, 8, 9)),
        (("quote_pcrs", TIGHTENED, "quote_pcrs: PCR 9 now quoted"),),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_field_change_is_named_and_classed(case: str) -> None:
    row = CASES[case]
    diff = diff_policies(row.before, row.after)
    assert [(c.field, c.kind, c.text) for c in diff.changes] == list(row.expect)
    assert diff.summary == ("; ".join(t for _, _, t in row.expect) or "no change")
    assert diff.loosened == any(k == LOOSENED for _, k, _ in row.expect)


def test_fields_of_the_model_are_all_covered() -> None:
    """A field added to ReferencePolicy without a row above fails here."""
    covered = {f.split(".")[0] for c in CASES.values() for f, _, _ in c.expect}
    fields = set(ReferencePolicy.__dataclass_fields__) - {"version"}
    assert fields <= covered


def test_the_issue_example_reads_as_one_summary() -> None:
    weaker = policy(
        require_secure_boot=False,
        pcrs={"sha256": {0: V0}},
        kernel_cmdlines=(CMDLINE, "init=/bin/sh"),
    )
    diff = diff_policies(policy(), weaker)
    assert diff.summary == (
        "require_secure_boot: true → false; PCR 7 pin removed (sha256 a7a7a7a7a7a7…); "
        "kernel_cmdlines: added 'init=/bin/sh'"
    )
    assert diff.loosened
    assert diff.to_dict() == {
        "summary": diff.summary,
        "loosened": True,
        "changes": [{"field": c.field, "kind": c.kind, "text": c.text} for c in diff.changes],
    }


def test_a_new_policy_is_described() -> None:
    diff = diff_policies(None, policy())
    assert diff.changes == (
        PolicyChange(
            "policy",
            NEUTRAL,
            "created: PCR 0, 7 pinned (sha256); Secure Boot required; 2 boot applications "
            "allowed; 1 kernel command line allowed; command line must contain "
            "'lockdown=integrity'; quotes sha256 PCR 0, 4, 7, 8",
        ),
    )
    assert not diff.loosened


def test_captured_policies_differ_by_their_pins() -> None:
    """Two captures from lab boots: Secure Boot off shows up as the loosening it is."""

    def captured(**boot: object) -> ReferencePolicy:
        raw, _ = measure_boot(BootConfig().with_changes(**boot), ("sha1", "sha256"))
        log = parse_event_log(raw)
        return capture_policy("gold", log, replay(log))

    strict, lax = captured(), captured(secure_boot=False)
    diff = diff_policies(strict, lax)
    kinds = {c.field: c.kind for c in diff.changes}
    assert kinds["require_secure_boot"] == LOOSENED
    assert kinds["pcrs.sha256.7"] == NEUTRAL  # the Secure Boot state is measured in PCR 7
    assert diff.loosened
    back = diff_policies(lax, strict)
    assert {c.field: c.kind for c in back.changes}["require_secure_boot"] == TIGHTENED
