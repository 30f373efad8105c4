"""What a change of a reference policy loosens or tightens, field by field, in plain words.

:func:`diff_policies` compares two :class:`ReferencePolicy` versions and names each change with
its class: *loosened* (more hosts can pass: a pin removed, Secure Boot no longer required, an
application or command line allowed), *tightened* (fewer can pass), or *neutral* (a name, a
description, an expected value replaced by another). The audit log keeps the summary of every
policy change, so that weakening is loud and can be reviewed later (THREATS rule 4)::

    require_secure_boot: true → false; PCR 7 pin removed (sha256 65ca…); kernel_cmdlines: added
    'init=/bin/sh'

Pure: two policies in, a :class:`PolicyDiff` out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hostseal.attest.policy import AllowedApplication, ReferencePolicy

__all__ = ["LOOSENED", "NEUTRAL", "TIGHTENED", "PolicyChange", "PolicyDiff", "diff_policies"]

LOOSENED = "loosened"
TIGHTENED = "tightened"
NEUTRAL = "neutral"


@dataclass(frozen=True)
class PolicyChange:
    """One change: the field (``pcrs.<bank>.<pcr>`` for a pin), its class, and what it says."""

    field: str
    kind: str  # LOOSENED | TIGHTENED | NEUTRAL
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "kind": self.kind, "text": self.text}


@dataclass(frozen=True)
class PolicyDiff:
    changes: tuple[PolicyChange, ...]

    @property
    def summary(self) -> str:
        return "; ".join(c.text for c in self.changes) or "no change"

    @property
    def loosened(self) -> bool:
        return any(c.kind == LOOSENED for c in self.changes)

    def to_dict(self) -> dict[str, object]:
        return {
            "summary": self.summary,
            "loosened": self.loosened,
            "changes": [c.to_dict() for c in self.changes],
        }


def diff_policies(old: ReferencePolicy | None, new: ReferencePolicy) -> PolicyDiff:
    """The changes from ``old`` to ``new`` (``old`` None: the policy is created)."""
    if old is None:
        return PolicyDiff((PolicyChange("policy", NEUTRAL, f"created: {describe(new)}"),))
    return PolicyDiff(tuple(_changes(old, new)))


def describe(policy: ReferencePolicy) -> str:
    """What the policy requires, in one line."""
    said = []
    for bank, values in policy.pcrs.items():
        if values:
            said.append(f"PCR {_numbers(values)} pinned ({bank})")
    if policy.require_secure_boot:
        said.append("Secure Boot required")
    if policy.boot_applications:
        said.append(f"{_count(len(policy.boot_applications), 'boot application')} allowed")
    if policy.kernel_cmdlines:
        said.append(f"{_count(len(policy.kernel_cmdlines), 'kernel command line')} allowed")
    if policy.kernel_cmdline_required:
        words = ", ".join(_q(w) for w in policy.kernel_cmdline_required)
        said.append(f"command line must contain {words}")
    said.append(f"quotes {policy.quote_bank} PCR {_numbers(policy.quote_pcrs)}")
    return "; ".join(said)


def _changes(old: ReferencePolicy, new: ReferencePolicy) -> Iterator[PolicyChange]:
    if old.name != new.name:
        yield PolicyChange("name", NEUTRAL, f"name: {_q(old.name)} → {_q(new.name)}")
    if old.description != new.description:
        yield PolicyChange(
            "description", NEUTRAL, f"description: {_q(old.description)} → {_q(new.description)}"
        )
    if old.require_secure_boot != new.require_secure_boot:
        kind = TIGHTENED if new.require_secure_boot else LOOSENED
        was, now = _bool(old.require_secure_boot), _bool(new.require_secure_boot)
        yield PolicyChange("require_secure_boot", kind, f"require_secure_boot: {was} → {now}")
    yield from _pins(old, new)
    yield from _applications(old.boot_applications, new.boot_applications)
    yield from _cmdlines(old.kernel_cmdlines, new.kernel_cmdlines)
    yield from _required(old.kernel_cmdline_required, new.kernel_cmdline_required)
    if old.quote_bank != new.quote_bank:
        yield PolicyChange(
            "quote_bank", NEUTRAL, f"quote_bank: {old.quote_bank} → {new.quote_bank}"
        )
    yield from _quoted(old.quote_pcrs, new.quote_pcrs)
    if old.version != new.version:
        yield PolicyChange("version", NEUTRAL, f"version: {old.version} → {new.version}")


def _pins(old: ReferencePolicy, new: ReferencePolicy) -> Iterator[PolicyChange]:
    for bank in sorted(set(old.pcrs) | set(new.pcrs)):
        before, after = old.pcrs.get(bank, {}), new.pcrs.get(bank, {})
        for pcr in sorted(set(before) | set(after)):
            field = f"pcrs.{bank}.{pcr}"
            was, now = before.get(pcr), after.get(pcr)
            if was == now:
                continue
            if now is None:
                assert was is not None
                yield PolicyChange(field, LOOSENED, f"PCR {pcr} pin removed ({bank} {_hex(was)})")
            elif was is None:
                yield PolicyChange(field, TIGHTENED, f"PCR {pcr} pinned ({bank} {_hex(now)})")
            else:
                yield PolicyChange(
                    field,
                    NEUTRAL,
                    f"PCR {pcr} ({bank}) expected value changed: {_hex(was)} → {_hex(now)}",
                )


def _app(app: AllowedApplication) -> str:
    where = app.path or "an application"
    return f"{where} (sha256 {_hex(app.sha256)})"


def _applications(
    old: tuple[AllowedApplication, ...], new: tuple[AllowedApplication, ...]
) -> Iterator[PolicyChange]:
    field = "boot_applications"
    if old and not new:
        yield PolicyChange(
            field,
            LOOSENED,
            f"{field}: allow-list removed (was {_count(len(old), 'application')}): any boot "
            "application passes",
        )
        return
    if new and not old:
        yield PolicyChange(
            field,
            TIGHTENED,
            f"{field}: allow-list added: only {_count(len(new), 'application')} may boot",
        )
        return
    before = {a.sha256: a for a in old}
    after = {a.sha256: a for a in new}
    for digest, app in after.items():
        if digest not in before:
            yield PolicyChange(field, LOOSENED, f"{field}: allowed {_app(app)}")
        elif before[digest].path != app.path:
            was, now = before[digest].path, app.path
            yield PolicyChange(
                field,
                NEUTRAL,
                f"{field}: path of sha256 {_hex(digest)} {_quoted_or_none(was)} → "
                f"{_quoted_or_none(now)}",
            )
    for digest, app in before.items():
        if digest not in after:
            yield PolicyChange(field, TIGHTENED, f"{field}: no longer allowed {_app(app)}")


def _cmdlines(old: tuple[str, ...], new: tuple[str, ...]) -> Iterator[PolicyChange]:
    field = "kernel_cmdlines"
    if old and not new:
        yield PolicyChange(
            field, LOOSENED, f"{field}: list removed (was {len(old)}): any command line passes"
        )
        return
    if new and not old:
        yield PolicyChange(
            field, TIGHTENED, f"{field}: only {_count(len(new), 'command line')} may boot"
        )
        return
    for line in new:
        if line not in old:
            yield PolicyChange(field, LOOSENED, f"{field}: added {_q(line)}")
    for line in old:
        if line not in new:
            yield PolicyChange(field, TIGHTENED, f"{field}: removed {_q(line)}")


def _required(old: tuple[str, ...], new: tuple[str, ...]) -> Iterator[PolicyChange]:
    field = "kernel_cmdline_required"
    for word in new:
        if word not in old:
            yield PolicyChange(field, TIGHTENED, f"{field}: {_q(word)} now required")
    for word in old:
        if word not in new:
            yield PolicyChange(field, LOOSENED, f"{field}: {_q(word)} no longer required")


def _quoted(old: tuple[int, ...], new: tuple[int, ...]) -> Iterator[PolicyChange]:
    added, removed = set(new) - set(old), set(old) - set(new)
    if added:
        yield PolicyChange("quote_pcrs", TIGHTENED, f"quote_pcrs: PCR {_numbers(added)} now quoted")
    if removed:
        yield PolicyChange(
            "quote_pcrs", LOOSENED, f"quote_pcrs: PCR {_numbers(removed)} no longer quoted"
        )


def _numbers(values: object) -> str:
    assert isinstance(values, dict | set | tuple | list | frozenset)
    return ", ".join(str(v) for v in sorted(values))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _hex(value: bytes) -> str:
    return value.hex()[:12] + "…"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _quoted_or_none(text: str | None) -> str:
    return _q(text) if text is not None else "none"


def _q(text: str) -> str:
    return f"'{text}'"
