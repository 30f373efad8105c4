"""Log scanning on the real ESXi lines of the corpus and on variations of them: each finding
once, with evidence lines that are the lines of the input."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import pytest

from hostseal.cli.doctor import expand_log_args
from hostseal.doctor import KnowledgeBase, LogInput, scan
from hostseal.doctor.logscan import MAX_EVIDENCE, file_kind, line_kinds

from .conftest import Cli

pytestmark = pytest.mark.corpus

CORPUS_FILE = "esxi-logs/esxi_tpm_log_lines.txt"

# What each block (source) of the corpus file shows, by a piece of its source URL.
CORPUS_BLOCKS: dict[str, set[str]] = {
    "legacyId=81838": {"sha256-bank-inactive"},
    "article/436517": {"esxi-tpm-not-responding"},
    "message/2982212": {"esxi-tpm-interface-not-2.0", "esxi-ek-certificate-missing"},
    "williamlam.com": {"esxi-tpm-crb-unsupported"},
    "article/334591": {"esxi-ek-certificate-unreadable"},
    "dell.com": {"secure-boot-disabled", "esxi-ek-creation-failed"},
    "article/312109": {
        "security-violation",
        "esxi-config-decryption-failed",
        "esxi-config-recovery-failed",
    },
}


def corpus_text(corpus: Path) -> str:
    return (corpus / CORPUS_FILE).read_text()


def blocks(text: str) -> dict[str, str]:
    """Block text by its source line (comment lines of the header dropped)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## source:"):
            current = found.setdefault(line, [])
        elif current is not None:
            current.append(line)
    return {source: "\n".join(lines) + "\n" for source, lines in found.items()}


def ids(text: str, kb: KnowledgeBase, name: str = "-") -> list[str]:
    return [f.finding.id for f in scan([LogInput(name, text)], kb)]


def block_for(source: str) -> set[str]:
    [expected] = [v for k, v in CORPUS_BLOCKS.items() if k in source]
    return expected


# -- the real lines ---------------------------------------------------------------------------


def test_every_block_of_the_corpus_is_known(corpus: Path) -> None:
    sources = list(blocks(corpus_text(corpus)))
    assert len(sources) == len(CORPUS_BLOCKS)
    for source in sources:
        block_for(source)  # exactly one entry of CORPUS_BLOCKS names it


def test_each_corpus_block_gives_its_findings(corpus: Path, kb: KnowledgeBase) -> None:
    for source, text in blocks(corpus_text(corpus)).items():
        found = ids(text, kb)
        assert sorted(found) == sorted(block_for(source)), source


def test_whole_corpus_file_each_finding_once(corpus: Path, kb: KnowledgeBase) -> None:
    text = corpus_text(corpus)
    lines = text.split("\n")
    findings = scan([LogInput("esxi_tpm_log_lines.txt", text)], kb)
    found = [f.finding.id for f in findings]
    assert len(found) == len(set(found))
    assert set(found) == set().union(*CORPUS_BLOCKS.values())
    for f in findings:
        assert 1 <= len(f.evidence) <= MAX_EVIDENCE and f.matches >= len(f.evidence)
        for e in f.evidence:  # the evidence is the input's line, at its line number
            assert e.source == "esxi_tpm_log_lines.txt"
            assert lines[e.line - 1].strip() == e.text
    severities = [f.finding.severity for f in findings]
    order = ["critical", "error", "warning", "info"]
    assert severities == sorted(severities, key=order.index)


def test_sha256_block_explains_the_connection_message(corpus: Path, kb: KnowledgeBase) -> None:
    [(_source, text)] = [(s, t) for s, t in blocks(corpus_text(corpus)).items() if "81838" in s]
    [finding] = scan([LogInput("pasted.txt", text)], kb)
    assert finding.finding.id == "sha256-bank-inactive"
    assert finding.absorbed == ["esxi-tpm-connection-failed"]
    shown = [e.text for e in finding.evidence]
    assert any("TpmDriverInitImpl:307" in t for t in shown)
    assert any("couldn't perform TIS init" in t for t in shown)
    assert any("connection cannot be established" in t for t in shown)
    assert "SHA-256" in " ".join(finding.finding.remedy)


# -- variations ------------------------------------------------------------------------------

NOISE = [
    "2024-05-01T10:00:00.000Z cpu2:2097152)Loading module nmlx5_core ...",
    "2024-05-01T10:00:00.100Z cpu2:2097152)Elf: 2130: module nmlx5_core has license VMware",
    "[2024-05-01T10:00:01.000Z] info hostd[2099011] [Originator@6876 sub=Vimsvc] Task Created",
    "2024-05-01T10:00:02.123Z info vpxd[04321] [Originator@6876 sub=vpxLro] [VpxLRO] -- BEGIN",
    "tpmDriver: Tpm2Init:1596: Initialization of TPM 2 impl done.",
    "",
    "   ",
]


def vary(line: str, rng: random.Random) -> str:
    """The same message, from another host, another day, another CPU, another build."""
    stamp = (
        f"20{rng.randint(18, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
        f"{rng.randint(0, 999):03d}Z"
    )
    line = re.sub(r"YYYY-[A-Z]{2}-[A-Z]{2}T[HMS:]+(\.\d+)?Z?", stamp, line)
    line = re.sub(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?", stamp, line)
    line = re.sub(r"\bcpu\d+:\d+\)", f"cpu{rng.randint(0, 255)}:{rng.randint(2**21, 2**22)})", line)
    # Source line numbers change with every build: TpmDriverInitImpl:307 / :532, Tpm_Transmit:###
    line = re.sub(r"\b(\w+):(\d+|#+):", lambda m: f"{m[1]}:{rng.randint(1, 9999)}:", line)
    line = re.sub(r"\b(hostd|vpxd)\[\d+\]", lambda m: f"{m[1]}[{rng.randint(1000, 10**9)}]", line)
    line = re.sub(r"Originator@\d+", f"Originator@{rng.randint(1000, 9999)}", line)
    return line


def varied_text(text: str, rng: random.Random, *, crlf: bool) -> str:
    out: list[str] = []
    for line in text.split("\n"):
        if line.startswith("#"):
            continue  # the corpus's own comments
        out += rng.sample(NOISE, rng.randint(0, 3))
        out.append(vary(line, rng))
    out += rng.sample(NOISE, 2)
    return ("\r\n" if crlf else "\n").join(out)


@pytest.mark.parametrize("seed", range(6))
def test_variations_of_each_block_give_the_same_findings_once(
    corpus: Path, kb: KnowledgeBase, seed: int
) -> None:
    rng = random.Random(seed)
    for source, text in blocks(corpus_text(corpus)).items():
        varied = varied_text(text, rng, crlf=seed % 2 == 1)
        findings = scan([LogInput("-", varied)], kb)
        found = [f.finding.id for f in findings]
        assert sorted(found) == sorted(block_for(source)), (source, varied)
        for f in findings:
            for e in f.evidence:
                assert not e.text.endswith("\r")
                assert e.text == varied.replace("\r\n", "\n").split("\n")[e.line - 1].strip()


def test_variations_across_several_files_each_finding_once(corpus: Path, kb: KnowledgeBase) -> None:
    rng = random.Random(42)
    parts = list(blocks(corpus_text(corpus)).values())
    inputs = [
        LogInput(f"host{i}/vmkernel-{i}.log", varied_text(part, rng, crlf=bool(i % 2)))
        for i, part in enumerate(parts)
    ]
    # Twice the same logs (a support bundle and a copy): still each finding once.
    found = [f.finding.id for f in scan(inputs + inputs, kb)]
    assert len(found) == len(set(found))


# Lines quoted by the seed documents (another build of ESXi: other line numbers, other texts).
SEED_VARIANTS = {
    "2018-05-09T21:30:21.060Z cpu23:2099722)WARNING: tpmDriver: TpmDriverInitImpl:532: TPM 2 "
    "SHA-256 PCR bank not found to be active. ": "sha256-bank-inactive",
    "2018-05-09T21:30:21.060Z cpu23:2099722)tpmdriver failed to load. ": (
        "esxi-tpm-connection-failed"
    ),
    "2018-05-09T21:30:21.061Z cpu23:2099722)WARNING: Elf: 3144: Kernel based module load of "
    "tpmdriver failed: Failure <Mod_LoadDone failed>": "esxi-tpm-connection-failed",
    "2018-05-10T14:02:55.920Z cpu18:2100795)tpmDriver: Tpm2ResMgrProcessResponse:846: Error: "
    "TPM command error code 0x18b": "txt-enabled",
    "vpxd-11.log:2018-05-10T17:41:05.591Z warning vpxd[05828] [Originator@6876 sub=Attestation] "
    "Failed to update integrity report; [vim.HostSystem:host-29,esxi-117.foobar.com], "
    "N7Vmacore9ExceptionE(No identity key in DB, try to reconnect host)": (
        "attestation-no-identity-key"
    ),
    "Unable to restore the system configuration. A security violation was detected The system "
    "has found problem on your machine and cannot continue. |": "security-violation",
    "Host secure boot was disabled": "secure-boot-disabled",
    "TPM 2.0 device detected but a connection cannot be established.": (
        "esxi-tpm-connection-failed"
    ),
}


@pytest.mark.parametrize(("line", "expected"), SEED_VARIANTS.items())
def test_variants_quoted_elsewhere(kb: KnowledgeBase, line: str, expected: str) -> None:
    assert ids(line, kb) == [expected]
    assert ids(vary(line, random.Random(1)) + "\r\n", kb) == [expected]


def test_identity_key_lines_from_vpxd_log(kb: KnowledgeBase) -> None:
    text = (
        "2018-05-10T17:41:05.588Z info vpxd[05828] [Originator@6876 sub=Attestation] Starting "
        "host attestation; [vim.HostSystem:host-29,esxi-117.foobar.com]\n"
        "2018-05-10T17:41:05.588Z info vpxd[05828] [Originator@6876 sub=Attestation] No cached "
        "identity key, loading from DB\n"
        "2018-05-10T17:41:05.591Z warning vpxd[05828] [Originator@6876 sub=Attestation] Failed "
        "to update integrity report; [vim.HostSystem:host-29,esxi-117.foobar.com], "
        "N7Vmacore9ExceptionE(No identity key in DB, try to reconnect host)\n"
    )
    [finding] = scan([LogInput("vpxd-11.log", text)], kb)
    assert finding.finding.id == "attestation-no-identity-key"
    assert [e.line for e in finding.evidence] == [2, 3]  # the preceding line is evidence too
    assert "Connection > Disconnect, then Connection > Connect" in " ".join(finding.finding.remedy)


# -- kinds, evidence, limits ------------------------------------------------------------------


def test_evidence_only_lines_raise_nothing_alone(kb: KnowledgeBase) -> None:
    assert ids("info vpxd[1] No cached identity key, loading from DB\n", kb) == []
    best_effort = "tpmDriver: Tpm2CheckInterface:616: Continuing on best effort basis using the 2.0"
    assert ids(best_effort + " protocol.\n", kb) == []


def test_line_kinds_restrict_signatures(kb: KnowledgeBase) -> None:
    text = "Host Secure Boot was disabled\n"
    assert ids(text, kb, "vpxd-11.log") == ["secure-boot-disabled"]
    assert ids(text, kb, "-") == ["secure-boot-disabled"]  # unknown kind: any signature
    assert ids(text, kb, "/var/run/log/vmkernel.log") == []  # vCenter text, not vmkernel's
    # A marker in the line wins over the file name.
    vmk = "2024-01-01T00:00:00Z cpu1:2097152)WARNING: tpmDriver: TpmDriverInitImpl:9: TPM 2 "
    vmk += "SHA-256 PCR bank not found to be active."
    assert ids(vmk, kb, "vpxd.log") == ["sha256-bank-inactive"]
    hostd = "[2024] info hostd[1] [sub=X] TPM 2 SHA-256 PCR bank not found to be active."
    assert ids(hostd, kb, "vmkernel.log") == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("vmkernel.log", "vmkernel"),
        ("/var/run/log/vmkernel.1.log", "vmkernel"),
        ("vmkwarning.log", "vmkwarning"),
        ("hostd.log", "hostd"),
        ("vpxd-11.log", "vpxd"),
        ("psod-screen.txt", "psod"),
        ("hostseal-unlock.journal", "hostseal"),
        ("notes.txt", None),
        ("-", None),
    ],
)
def test_file_kinds(name: str, kind: str | None) -> None:
    assert file_kind(name) == kind


def test_line_markers() -> None:
    assert line_kinds("x cpu3:2097152)WARNING: y", None) == {"vmkwarning", "vmkernel"}
    assert line_kinds("Jan 1 host hostseal[42]: Error: z", "vmkernel") == {"hostseal"}
    assert line_kinds("plain text", None) is None
    assert line_kinds("plain text", "hostd") == {"hostd"}


def test_many_matching_lines_keep_a_few_and_count_all(kb: KnowledgeBase) -> None:
    line = "cpu1:2)tpmDriver: Tpm2ResMgrProcessResponse:846: Error: TPM command error code 0x18b"
    [finding] = scan([LogInput("vmkernel.log", "\n".join([line] * 50))], kb)
    assert finding.matches == 50 and len(finding.evidence) == MAX_EVIDENCE
    assert [e.line for e in finding.evidence] == list(range(1, MAX_EVIDENCE + 1))


def test_nothing_in_empty_or_unrelated_text(kb: KnowledgeBase) -> None:
    assert ids("", kb) == []
    assert ids("\ufeff\n\n", kb) == []
    assert ids("\n".join(NOISE), kb) == []
    assert ids("x" * 100_000, kb) == []


def test_long_evidence_lines_are_shortened(kb: KnowledgeBase) -> None:
    line = "Host Secure Boot was disabled " + "x" * 1000
    [finding] = scan([LogInput("-", line)], kb)
    assert len(finding.evidence[0].text) == 300 and finding.evidence[0].text.endswith("…")


# -- command line ----------------------------------------------------------------------------


def test_cli_scans_several_files_and_stdin(
    corpus: Path, run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = list(blocks(corpus_text(corpus)).items())
    files = []
    for i, (_, text) in enumerate(parts[:3]):
        files.append(tmp_path / f"log{i}.log")
        files[-1].write_text(text)
    stdin_text = parts[6][1]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin_text.encode())))
    result = run("doctor", "--log", *map(str, files), "-", "--json")
    assert result.code == 1, result.err  # critical and error findings
    data = result.json()
    expected = set().union(*(block_for(s) for s, _ in [*parts[:3], parts[6]]))
    assert {f["id"] for f in data["findings"]} == expected  # type: ignore[index, union-attr]
    assert [i["name"] for i in data["inputs"]] == [*map(str, files), "-"]  # type: ignore[index, union-attr]


def test_cli_human_output_names_evidence_and_remedy(run: Cli, tmp_path: Path) -> None:
    log = tmp_path / "vmkwarning.log"
    log.write_bytes(
        b"2024-03-01T01:02:03.004Z cpu7:2098000)WARNING: tpmDriver: TpmDriverInitImpl:532: TPM 2 "
        b"SHA-256 PCR bank not found to be active.\r\n"
        b"2024-03-01T01:02:03.005Z cpu7:2098000)tpmdriver failed to load.\r\n"
    )
    result = run("doctor", "--log", str(log))
    assert result.code == 1
    assert "The TPM's SHA-256 PCR bank is not active [sha256-bank-inactive]" in result.out
    assert f"{log}:1: 2024-03-01T01:02:03.004Z" in result.out
    assert f"{log}:2: " in result.out
    assert "Set the TPM hash algorithm" in result.out
    assert result.out.count("[sha256-bank-inactive]") == 1


def test_cli_exit_code_zero_for_warnings_only_or_nothing(run: Cli, tmp_path: Path) -> None:
    log = tmp_path / "vpxd.log"
    log.write_text("Host TPM attestation alarm\n")
    result = run("doctor", "--log", str(log), "--json")
    assert result.code == 0
    [finding] = result.json()["findings"]  # type: ignore[misc]
    assert finding["id"] == "attestation-alarm"
    log.write_text("all is well\n")
    result = run("doctor", "--log", str(log))
    assert result.code == 0 and "No known problem in 1 lines of 1 log(s)." in result.out


def test_cli_log_errors(run: Cli, tmp_path: Path) -> None:
    result = run("doctor", "--log", str(tmp_path / "missing.log"))
    assert result.code == 2 and "cannot read" in result.err
    result = run("doctor", "--log")
    assert result.code == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--log", "a", "b"], ["--log", "a", "--log", "b"]),
        (["--log", "a", "-", "--json"], ["--log", "a", "--log", "-", "--json"]),
        (["--json", "--log", "a"], ["--json", "--log", "a"]),
        (["--log", "a", "before-board-swap"], ["--log", "a", "before-board-swap"]),
        (["--log"], ["--log"]),
        (["--log", "--json"], ["--log", "--json"]),
        (["before-board-swap", "--json"], ["before-board-swap", "--json"]),
    ],
)
def test_log_option_takes_several_files(args: list[str], expected: list[str]) -> None:
    assert expand_log_args(args, {"before-board-swap"}) == expected


def test_cli_language_falls_back_to_english(
    run: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "vpxd.log"
    log.write_text("Host Secure Boot was disabled\n")
    monkeypatch.setenv("HOSTSEAL_LANG", "de_DE.UTF-8")  # hostseal ships English only
    result = run("doctor", "--log", str(log), "--json")
    [finding] = result.json()["findings"]  # type: ignore[misc]
    assert finding["title"] == "UEFI Secure Boot is disabled"
