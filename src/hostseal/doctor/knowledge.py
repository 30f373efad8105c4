"""The doctor's knowledge base: one TOML file per finding, read with :mod:`tomllib`.

A file ``kb/<id>.toml`` says how to recognise a problem (its *symptoms*: log lines, live-check
states, hostseal errors), why it happens and what to do, in one or more languages::

    id = "txt-enabled"
    severity = "error"                      # critical | error | warning | info
    references = ["https://..."]
    supersedes = ["esxi-tpm-connection-failed"]   # findings this one explains (optional)

    [[log]]                                 # a log-line signature
    kinds = ["vmkernel", "vmkwarning"]
    pattern = 'Tpm2ResMgrProcessResponse:\\d+: Error: TPM command error code 0x18b'
    # evidence_only = true                  # shown as evidence, never raises the finding alone
    # case_sensitive = true                 # patterns ignore case unless this is set

    [[check]]                               # a live-check state
    check = "drtm"
    state = "warn"
    # reason = "..."                        # only for this reason of that check

    [[error]]                               # a hostseal error (class name, optional cause)
    type = "TpmLockout"
    # commands = ["agent"]                  # only when these hostseal commands raise it

    [text.en]                               # English is required; other languages may be
    title = "..."                           # partial and fall back to English per field
    cause = "..."
    remedy = ["step 1", "step 2"]

Loading validates everything (unknown keys, bad or empty-matching regular expressions, unknown
log kinds, checks or findings, missing English texts, supersede cycles) and raises
:class:`~hostseal.doctor.errors.KnowledgeBaseInvalid` listing every problem.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from hostseal.doctor.errors import KnowledgeBaseInvalid

SEVERITIES = ("critical", "error", "warning", "info")
"""From most to least serious."""

LOG_KINDS: Mapping[str, str] = {
    "vmkernel": "ESXi /var/run/log/vmkernel.log",
    "vmkwarning": "ESXi /var/run/log/vmkwarning.log",
    "hostd": "ESXi /var/run/log/hostd.log",
    "vpxd": "vCenter vpxd.log",
    "vcenter": "vCenter alarm and Monitor > Security texts",
    "esxcli": "ESXi shell (esxcli, vsish) output",
    "psod": "ESXi purple diagnostic screen / boot console text",
    "hostseal": "hostseal's own messages (command output, journal of its units)",
}

CHECK_IDS = (
    "tpm",
    "sha256-bank",
    "secure-boot",
    "drtm",
    "lockout",
    "eventlog",
    "config",
    "requirements",
    "unlock",
    "recovery-keys",
    "escrow",
    "agent",
)
"""The live checks of ``hostseal doctor``, by id (see :mod:`hostseal.doctor.checks`)."""

CHECK_STATES = ("warn", "fail")
TEXT_FIELDS = ("title", "cause", "remedy")
DEFAULT_LANGUAGE = "en"

_ID = re.compile(r"[a-z0-9][a-z0-9.-]{1,62}")  # all three: fullmatch, no trailing newline
_LANG = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_TYPE = re.compile(r"[A-Z][A-Za-z0-9_]*")
_TOP_KEYS = {"id", "severity", "references", "supersedes", "log", "check", "error", "text"}
_LOG_KEYS = {"kinds", "pattern", "evidence_only", "case_sensitive"}
_CHECK_KEYS = {"check", "state", "reason"}
_ERROR_KEYS = {"type", "cause", "commands"}


@dataclass(frozen=True)
class LogSignature:
    """A log line that shows the finding, in the log kinds it can appear in."""

    pattern: re.Pattern[str]
    kinds: frozenset[str]
    evidence_only: bool = False

    def applies_to(self, kinds: frozenset[str] | None) -> bool:
        """Whether a line of ``kinds`` (``None``: unknown kind) may match this signature."""
        return kinds is None or not kinds.isdisjoint(self.kinds)


@dataclass(frozen=True)
class CheckSignature:
    """A live check in a non-passing state (optionally for one reason) that shows the finding."""

    check: str
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class ErrorSignature:
    """A hostseal error class (and optionally its ``details["cause"]``) that shows the finding."""

    type: str
    cause: str | None = None
    #: the ``hostseal`` commands (first word) the finding fits; empty: every command
    commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """A knowledge-base entry with its texts in one language (English where untranslated)."""

    id: str
    severity: str
    title: str
    cause: str
    remedy: tuple[str, ...]
    references: tuple[str, ...]
    language: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "cause": self.cause,
            "remedy": list(self.remedy),
            "references": list(self.references),
        }


@dataclass(frozen=True)
class Entry:
    """One knowledge-base file: symptoms, severity, references, texts in every language."""

    id: str
    severity: str
    source: str
    texts: Mapping[str, Mapping[str, Any]]
    logs: tuple[LogSignature, ...] = ()
    checks: tuple[CheckSignature, ...] = ()
    errors: tuple[ErrorSignature, ...] = ()
    references: tuple[str, ...] = ()
    supersedes: tuple[str, ...] = ()

    def localized(self, languages: Sequence[str]) -> Finding:
        """The entry in the first of ``languages`` that has each text (English last)."""
        chosen: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            for lang in [*languages, DEFAULT_LANGUAGE]:
                if name in self.texts.get(lang, {}):
                    chosen[name] = self.texts[lang][name]
                    break
        return Finding(
            id=self.id,
            severity=self.severity,
            title=chosen["title"],
            cause=chosen["cause"],
            remedy=tuple(chosen["remedy"]),
            references=self.references,
            language=languages[0] if languages else DEFAULT_LANGUAGE,
        )


def negotiate(language: str | None) -> list[str]:
    """The languages to try, most wanted first: ``"de_DE.UTF-8"`` -> ``["de-DE", "de"]``."""
    if not language:
        return [DEFAULT_LANGUAGE]
    tag = language.split(".")[0].split("@")[0].replace("_", "-")
    parts = tag.split("-")
    wanted = ["-".join([parts[0].lower(), *parts[1:]])]
    if len(parts) > 1:
        wanted.append(parts[0].lower())
    return [w for w in wanted if _LANG.fullmatch(w)] or [DEFAULT_LANGUAGE]


@dataclass
class KnowledgeBase:
    """Every entry, and lookups from a symptom to the finding in the chosen language."""

    entries: dict[str, Entry]
    languages: list[str] = field(default_factory=lambda: [DEFAULT_LANGUAGE])

    @property
    def ids(self) -> list[str]:
        return list(self.entries)

    def finding(self, finding_id: str) -> Finding:
        return self.entries[finding_id].localized(self.languages)

    def findings(self) -> list[Finding]:
        return [self.finding(i) for i in self.entries]

    def for_check(self, check: str, state: str, reason: str | None = None) -> Finding | None:
        """The finding that explains ``check`` in ``state`` (for ``reason``, where one says)."""
        general: Finding | None = None
        for entry in self.entries.values():
            for sig in entry.checks:
                if sig.check != check or sig.state != state:
                    continue
                if sig.reason is not None and sig.reason == reason:
                    return entry.localized(self.languages)
                if sig.reason is None and general is None:
                    general = entry.localized(self.languages)
        return general

    def for_error(self, err: BaseException, command: str | None = None) -> Finding | None:
        """The finding that explains a hostseal error: its class or the nearest base class
        named by an entry, preferring an entry that also names the error's cause. With
        ``command`` (the ``hostseal`` command that raised it), only entries that fit it."""
        details = getattr(err, "details", {}) or {}
        cause = details.get("cause") if isinstance(details, dict) else None
        for cls in type(err).__mro__:
            general: Finding | None = None
            for entry in self.entries.values():
                for sig in entry.errors:
                    if sig.type != cls.__name__:
                        continue
                    if command is not None and sig.commands and command not in sig.commands:
                        continue
                    if sig.cause is not None and sig.cause == cause:
                        return entry.localized(self.languages)
                    if sig.cause is None and general is None:
                        general = entry.localized(self.languages)
            if general is not None:
                return general
        return None

    def superseded_by(self, finding_id: str) -> set[str]:
        """Every finding ``finding_id`` explains, directly or through another it explains."""
        seen: set[str] = set()
        todo = list(self.entries[finding_id].supersedes)
        while todo:
            other = todo.pop()
            if other not in seen and other in self.entries:
                seen.add(other)
                todo.extend(self.entries[other].supersedes)
        return seen


# -- loading ---------------------------------------------------------------------------------


def default_directory() -> Traversable:
    """The knowledge base shipped with hostseal (package data ``hostseal/doctor/kb``)."""
    return resources.files("hostseal.doctor").joinpath("kb")


def load_kb(
    language: str | None = None, directory: Path | Traversable | None = None
) -> KnowledgeBase:
    """Read and validate every ``*.toml`` in ``directory`` (default: the shipped one)."""
    folder = directory if directory is not None else default_directory()
    files = sorted(
        (f for f in folder.iterdir() if f.name.endswith(".toml") and f.is_file()),
        key=lambda f: f.name,
    )
    problems: list[str] = []
    entries: dict[str, Entry] = {}
    for f in files:
        try:
            data = tomllib.loads(f.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            problems.append(f"{f.name}: not valid TOML: {err}")
            continue
        entry, found = _entry(f.name, data)
        problems += found
        if entry is None:
            continue
        if entry.id in entries:
            problems.append(
                f"{f.name}: id: {entry.id!r} is also the id of {entries[entry.id].source}"
            )
            continue
        entries[entry.id] = entry
    if not files:
        problems.append(f"{folder}: no knowledge-base files (*.toml)")
    problems += _cross_problems(entries)
    if problems:
        raise KnowledgeBaseInvalid(problems)
    return KnowledgeBase(entries, negotiate(language))


def _cross_problems(entries: Mapping[str, Entry]) -> list[str]:
    problems = []
    for entry in entries.values():
        for other in entry.supersedes:
            if other == entry.id:
                problems.append(f"{entry.source}: supersedes: a finding cannot supersede itself")
            elif other not in entries:
                problems.append(f"{entry.source}: supersedes: no finding has the id {other!r}")
    kb = KnowledgeBase(dict(entries))
    for entry in entries.values():
        if entry.id in kb.superseded_by(entry.id):
            problems.append(
                f"{entry.source}: supersedes: {entry.id!r} supersedes itself in a cycle"
            )
    return problems


class _Problems:
    """Collects problems of one file, each prefixed with the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, what: str) -> None:
        self.items.append(f"{self.source}: {key}: {what}")

    def unknown_keys(self, where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
        for key in sorted(set(table) - set(allowed)):
            self.add(f"{where}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _entry(source: str, data: Mapping[str, Any]) -> tuple[Entry | None, list[str]]:
    p = _Problems(source)
    p.unknown_keys("", data, _TOP_KEYS)
    entry_id = data.get("id")
    if not isinstance(entry_id, str) or not _ID.fullmatch(entry_id):
        p.add("id", "missing, or not lower-case letters, digits, '.' and '-'")
        entry_id = None
    elif source != f"{entry_id}.toml":
        p.add("id", f"must match the file name ({entry_id}.toml)")
    severity = data.get("severity")
    if severity not in SEVERITIES:
        p.add("severity", f"must be one of {', '.join(SEVERITIES)}")
    logs = tuple(_logs(p, data.get("log", [])))
    checks = tuple(_checks(p, data.get("check", [])))
    errors = tuple(_errors(p, data.get("error", [])))
    if not (data.get("log") or data.get("check") or data.get("error")):
        p.add("log/check/error", "a finding needs at least one symptom")
    references = _strings(p, "references", data.get("references", []))
    for ref in references:
        if not (ref.startswith(("https://", "http://")) or ref.startswith("docs/")):
            p.add("references", f"{ref!r} is neither a URL nor a docs/ page")
    supersedes = _strings(p, "supersedes", data.get("supersedes", []))
    texts = _texts(p, data.get("text"))
    if p.items or entry_id is None:
        return None, p.items
    return (
        Entry(
            id=entry_id,
            severity=str(severity),
            source=source,
            texts=texts,
            logs=logs,
            checks=checks,
            errors=errors,
            references=tuple(references),
            supersedes=tuple(supersedes),
        ),
        [],
    )


def _tables(p: _Problems, key: str, value: Any) -> list[tuple[str, Mapping[str, Any]]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        p.add(key, f"must be an array of tables ([[{key}]])")
        return []
    return [(f"{key}[{i}].", v) for i, v in enumerate(value)]


def _strings(p: _Problems, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        p.add(key, "must be a list of non-empty strings")
        return []
    return list(value)


def _logs(p: _Problems, value: Any) -> Iterable[LogSignature]:
    for where, table in _tables(p, "log", value):
        p.unknown_keys(where, table, _LOG_KEYS)
        kinds = _strings(p, f"{where}kinds", table.get("kinds"))
        for kind in kinds:
            if kind not in LOG_KINDS:
                p.add(f"{where}kinds", f"unknown log kind {kind!r} (known: {', '.join(LOG_KINDS)})")
        flags = {}
        for flag in ("evidence_only", "case_sensitive"):
            flags[flag] = table.get(flag, False)
            if not isinstance(flags[flag], bool):
                p.add(f"{where}{flag}", "must be true or false")
        text = table.get("pattern")
        if not isinstance(text, str) or not text:
            p.add(f"{where}pattern", "missing or not a string")
            continue
        try:
            pattern = re.compile(text, 0 if flags["case_sensitive"] is True else re.IGNORECASE)
        except re.error as err:
            p.add(f"{where}pattern", f"not a valid regular expression: {err}")
            continue
        if pattern.search("") is not None:
            p.add(f"{where}pattern", "matches an empty line, so it would match every line")
            continue
        yield LogSignature(pattern, frozenset(kinds), flags["evidence_only"] is True)


def _checks(p: _Problems, value: Any) -> Iterable[CheckSignature]:
    for where, table in _tables(p, "check", value):
        p.unknown_keys(where, table, _CHECK_KEYS)
        check, state, reason = table.get("check"), table.get("state"), table.get("reason")
        ok = True
        if check not in CHECK_IDS:
            p.add(f"{where}check", f"unknown check {check!r} (known: {', '.join(CHECK_IDS)})")
            ok = False
        if state not in CHECK_STATES:
            p.add(f"{where}state", f"must be one of {', '.join(CHECK_STATES)}")
            ok = False
        if reason is not None and not (isinstance(reason, str) and _ID.fullmatch(reason)):
            p.add(f"{where}reason", "must be an id (lower-case letters, digits, '-')")
            ok = False
        if ok:
            yield CheckSignature(str(check), str(state), reason)


def _errors(p: _Problems, value: Any) -> Iterable[ErrorSignature]:
    for where, table in _tables(p, "error", value):
        p.unknown_keys(where, table, _ERROR_KEYS)
        kind, cause, commands = table.get("type"), table.get("cause"), table.get("commands", [])
        if not (isinstance(kind, str) and _TYPE.fullmatch(kind)):
            p.add(f"{where}type", "must be the class name of a hostseal error")
            continue
        if cause is not None and not (isinstance(cause, str) and _ID.fullmatch(cause)):
            p.add(f"{where}cause", "must be an id (lower-case letters, digits, '-')")
            continue
        if not (isinstance(commands, list) and all(isinstance(c, str) for c in commands)):
            p.add(f"{where}commands", "must be a list of hostseal command names")
            continue
        yield ErrorSignature(kind, cause, tuple(commands))


def _texts(p: _Problems, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        p.add("text", "missing: give at least [text.en] with title, cause and remedy")
        return {}
    texts: dict[str, dict[str, Any]] = {}
    for lang, table in value.items():
        where = f"text.{lang}."
        if not _LANG.fullmatch(lang):
            p.add(f"text.{lang}", "not a language tag (en, de, pt-BR, ...)")
            continue
        if not isinstance(table, dict):
            p.add(f"text.{lang}", "must be a table")
            continue
        p.unknown_keys(where, table, TEXT_FIELDS)
        for name in ("title", "cause"):
            if name in table and not (isinstance(table[name], str) and table[name].strip()):
                p.add(f"{where}{name}", "must be a non-empty string")
        if "remedy" in table and not _strings(p, f"{where}remedy", table["remedy"]):
            p.add(f"{where}remedy", "needs at least one step")
        texts[lang] = {k: v for k, v in table.items() if k in TEXT_FIELDS}
    english = texts.get(DEFAULT_LANGUAGE, {})
    for name in TEXT_FIELDS:
        if name not in english:
            p.add(f"text.{DEFAULT_LANGUAGE}.{name}", "missing (English is the fallback of all)")
    return texts
