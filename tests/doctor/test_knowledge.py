"""The knowledge base: every file loads, validation names every problem, translations fall
back to English, the lookups find the most specific finding."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from hostseal.doctor import KnowledgeBase, KnowledgeBaseInvalid, load_kb, negotiate
from hostseal.doctor.knowledge import default_directory
from hostseal.errors import SecurityViolation
from hostseal.secureconfig.errors import BundleMismatch
from hostseal.tpm import TpmLockout

REPO = Path(__file__).resolve().parents[2]
KB_DIR = REPO / "src" / "hostseal" / "doctor" / "kb"
KB_FILES = sorted(p.name for p in KB_DIR.glob("*.toml"))

VALID = """\
id = "{id}"
severity = "warning"
references = ["https://example.org/kb/1"]

[[log]]
kinds = ["vmkernel"]
pattern = 'something broke'

[text.en]
title = "Something broke"
cause = "Because."
remedy = ["Fix it."]
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(KnowledgeBaseInvalid) as err:
        load_kb(directory=folder)
    assert err.value.remedy
    return err.value.problems


def test_shipped_kb_is_the_package_data() -> None:
    assert Path(str(default_directory())) == KB_DIR
    assert len(KB_FILES) >= 40


@pytest.mark.parametrize("name", KB_FILES)
def test_every_file_loads_on_its_own(tmp_path: Path, name: str) -> None:
    shutil.copy(KB_DIR / name, tmp_path / name)
    # Alone, a file may name findings it supersedes that are not there: only that may fail.
    try:
        kb = load_kb(directory=tmp_path)
    except KnowledgeBaseInvalid as err:
        assert all("supersedes: no finding has the id" in p for p in err.problems), err.problems
        return
    [finding] = kb.findings()
    assert finding.id == name.removesuffix(".toml")
    assert finding.title and finding.cause and finding.remedy


def test_whole_kb_loads_and_texts_are_english(kb: KnowledgeBase) -> None:
    assert sorted(f"{i}.toml" for i in kb.ids) == KB_FILES
    for finding in kb.findings():
        assert finding.language == "en"
        assert finding.title[0].isupper() and not finding.title.endswith(".")
        assert finding.cause.endswith(".")
        for step in finding.remedy:
            assert step[0].isupper() or step.startswith(("hostseal", "/")), step
            assert step.endswith((".", ")")), step


def test_references_are_urls_or_existing_docs(kb: KnowledgeBase) -> None:
    for finding in kb.findings():
        for ref in finding.references:
            if ref.startswith("docs/"):
                assert (REPO / ref).is_file(), f"{finding.id}: {ref}"
            else:
                assert re.match(r"^https://[\w.-]+/", ref), f"{finding.id}: {ref}"


def test_error_types_named_exist_in_the_package(kb: KnowledgeBase) -> None:
    source = "\n".join(p.read_text() for p in (REPO / "src" / "hostseal").rglob("*.py"))
    classes = set(re.findall(r"^class (\w+)\(", source, re.MULTILINE))
    for entry in kb.entries.values():
        for sig in entry.errors:
            assert sig.type in classes, f"{entry.source}: no class {sig.type}"


# -- validation ------------------------------------------------------------------------------


def test_a_valid_file_loads(tmp_path: Path) -> None:
    kb = load_kb(directory=write(tmp_path, "broke.toml", VALID.format(id="broke")))
    assert kb.ids == ["broke"]


BROKEN = {
    "unknown top key": ('colour = "red"\n' + VALID, "broke.toml: colour: unknown key"),
    "unknown log key": (
        VALID.replace("[[log]]\n", "[[log]]\nflags = 1\n"),
        "log[0].flags: unknown key",
    ),
    "bad regex": (
        VALID.replace("'something broke'", "'something (broke'"),
        "log[0].pattern: not a valid regular expression",
    ),
    "regex matching every line": (
        VALID.replace("'something broke'", "'(broke)?'"),
        "log[0].pattern: matches an empty line",
    ),
    "unknown log kind": (
        VALID.replace('["vmkernel"]', '["syslog"]'),
        "log[0].kinds: unknown log kind 'syslog'",
    ),
    "unknown check": (
        VALID + '\n[[check]]\ncheck = "coffee"\nstate = "fail"\n',
        "check[0].check: unknown check 'coffee'",
    ),
    "unknown check state": (
        VALID + '\n[[check]]\ncheck = "tpm"\nstate = "pass"\n',
        "check[0].state: must be one of warn, fail",
    ),
    "error type not a class name": (
        VALID + '\n[[error]]\ntype = "tpm lockout"\n',
        "error[0].type: must be the class name",
    ),
    "bad severity": (VALID.replace('"warning"', '"urgent"'), "severity: must be one of"),
    "id not the file name": (VALID.format(id="other"), "id: must match the file name"),
    "no english": (
        VALID.replace("[text.en]", "[text.de]"),
        "text.en.title: missing (English is the fallback of all)",
    ),
    "unknown text key": (
        VALID.replace('title = "Something broke"', 'title = "Something broke"\nsummary = "x"'),
        "text.en.summary: unknown key",
    ),
    "empty remedy": (VALID.replace('["Fix it."]', "[]"), "text.en.remedy: needs at least one"),
    "no symptom": (
        VALID.replace("[[log]]\nkinds = [\"vmkernel\"]\npattern = 'something broke'\n", ""),
        "a finding needs at least one symptom",
    ),
    "reference neither url nor doc": (
        VALID.replace("https://example.org/kb/1", "KB 12345"),
        "references: 'KB 12345' is neither a URL nor a docs/ page",
    ),
    "supersedes unknown": (
        VALID.replace("[[log]]", 'supersedes = ["nothing-here"]\n\n[[log]]'),
        "supersedes: no finding has the id 'nothing-here'",
    ),
    "not toml": ("id = \n", "not valid TOML"),
}


@pytest.mark.parametrize(("text", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_invalid_files_are_refused_with_the_key_named(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = problems_of(write(tmp_path, "broke.toml", text.replace("{id}", "broke")))
    assert any(p.startswith("broke.toml: ") and expected in p for p in problems), problems


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = 'colour = "red"\n' + VALID.format(id="broke")
    text = text.replace("'something broke'", "'('").replace('"warning"', '"urgent"')
    problems = problems_of(write(tmp_path, "broke.toml", text))
    assert len(problems) == 3
    err = KnowledgeBaseInvalid(problems)
    assert "3 problems" in err.message and "broke.toml: colour" in err.message


def test_supersede_cycles_are_refused(tmp_path: Path) -> None:
    a = VALID.format(id="aa").replace("[[log]]", 'supersedes = ["bb"]\n\n[[log]]')
    b = VALID.format(id="bb").replace("[[log]]", 'supersedes = ["aa"]\n\n[[log]]')
    write(tmp_path, "aa.toml", a)
    problems = problems_of(write(tmp_path, "bb.toml", b))
    assert any("supersedes itself in a cycle" in p for p in problems)


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    assert any("no knowledge-base files" in p for p in problems_of(tmp_path))


# -- translations ----------------------------------------------------------------------------


def test_translation_falls_back_to_english_per_field(tmp_path: Path) -> None:
    text = VALID.format(id="broke") + '\n[text.de]\ntitle = "Etwas ist kaputt"\n'
    write(tmp_path, "broke.toml", text)
    german = load_kb("de_DE.UTF-8", directory=tmp_path).finding("broke")
    assert german.title == "Etwas ist kaputt"
    assert german.cause == "Because."  # not translated: English
    assert german.remedy == ("Fix it.",)
    assert german.language == "de-DE"
    assert load_kb("fr", directory=tmp_path).finding("broke").title == "Something broke"


def test_regional_translation_wins_over_the_language(tmp_path: Path) -> None:
    text = (
        VALID.format(id="broke")
        + '\n[text.pt]\ntitle = "Algo quebrou"\n'
        + '\n[text.pt-BR]\ntitle = "Algo quebrou (BR)"\n'
    )
    write(tmp_path, "broke.toml", text)
    assert load_kb("pt-BR", directory=tmp_path).finding("broke").title == "Algo quebrou (BR)"
    assert load_kb("pt_PT", directory=tmp_path).finding("broke").title == "Algo quebrou"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, ["en"]),
        ("", ["en"]),
        ("de", ["de"]),
        ("de_DE.UTF-8", ["de-DE", "de"]),
        ("C", ["en"]),
        ("ja_JP@euro", ["ja-JP", "ja"]),
    ],
)
def test_language_negotiation(given: str | None, expected: list[str]) -> None:
    assert negotiate(given) == expected


# -- lookups ---------------------------------------------------------------------------------


def test_error_lookup_prefers_the_cause_then_the_nearest_class(kb: KnowledgeBase) -> None:
    replaced = SecurityViolation("m", "r", {"cause": "tpm-replaced"})
    assert (found := kb.for_error(replaced)) is not None and found.id == "violation-tpm-replaced"
    other = SecurityViolation("m", "r", {"cause": "something-new"})
    assert (found := kb.for_error(other)) is not None and found.id == "security-violation"
    # BundleMismatch is a BundleCorrupt: the nearest base class named by the KB.
    assert (found := kb.for_error(BundleMismatch("m"))) is not None
    assert found.id == "bundle-corrupt"
    assert (found := kb.for_error(TpmLockout("m", "r"))) is not None and found.id == "tpm-lockout"
    assert kb.for_error(ValueError("not ours")) is None


def test_check_lookup_prefers_the_reason(kb: KnowledgeBase) -> None:
    assert (f := kb.for_check("tpm", "fail", "busy")) is not None and f.id == "tpm-busy"
    assert (f := kb.for_check("tpm", "fail", "whatever")) is not None
    assert f.id == "tpm-unavailable"  # the general finding of that state
    assert kb.for_check("tpm", "warn") is None
