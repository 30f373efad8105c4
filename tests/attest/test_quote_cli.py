"""``hostseal quote verify`` on tpm2-tools files: keylime's emulator quote (quote.out,
quotesig.out, quotepcr.out, ak.pub, akpub.pem), every PCR-file format, plain signatures, and the
messages and exit codes of failures."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from hostseal.attest.tpm2tools import parse_pcrs_marshaled, parse_pcrs_serialized

NONCE = "db1db298db6d60e6385b7231743e9c3056a18003"
PCR16 = "9dbb22387e019c04da95477333546082ce313152c4a7f8a6e1d5f0c77f4fb6f0"
VALUES = {"sha256": {15: bytes(32), 16: bytes.fromhex(PCR16), 22: b"\xff" * 32}}


@pytest.fixture
def keylime(corpus: Path) -> Path:
    return corpus / "keylime/test-data/files"


def _args(files: Path, **over: object) -> list[object]:
    args = {
        "--ak-public": files / "ak.pub",
        "--quote": files / "quote.out",
        "--signature": files / "quotesig.out",
        "--pcrs": files / "quotepcr.out",
        "--nonce": NONCE,
        **over,
    }
    out: list[object] = ["verify"]
    for flag, value in args.items():
        if value is not None:
            out += [flag, value]
    return out


@pytest.mark.corpus
@pytest.mark.parametrize("ak", ["ak.pub", "akpub.pem"])
def test_keylime_quote_verifies(run_quote_cli, keylime: Path, ak: str) -> None:  # type: ignore[no-untyped-def]
    run = run_quote_cli(*_args(keylime, **{"--ak-public": keylime / ak}))
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("Quote verified.\n")
    assert "  pcr_digest     passed  sha256 ec1636c69c548fd09a165a4f874e5d1610a8fbe3" in run.stdout
    assert f"  16 : 0x{PCR16.upper()}" in run.stdout


@pytest.mark.corpus
def test_keylime_json(run_quote_cli, keylime: Path) -> None:  # type: ignore[no-untyped-def]
    run = run_quote_cli(*_args(keylime), "--json")
    assert run.code == 0
    data = run.json()
    assert data["verified"] is True
    assert data["checks"] == {
        "quote": "passed",
        "signature": "passed",
        "nonce": "passed",
        "pcr_selection": "passed",
        "pcr_digest": "passed",
        "eventlog": "not requested",
    }
    assert data["pcrs"] == {"sha256": {"15": "00" * 32, "16": PCR16, "22": "ff" * 32}}
    assert data["ak"]["name"] == (keylime / "ak.name").read_bytes().hex()
    assert data["pcrs_from"] == "file"


@pytest.mark.corpus
def test_pcr_file_formats(run_quote_cli, keylime: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    serialized = (keylime / "quotepcr.out").read_bytes()
    assert parse_pcrs_serialized(serialized) == VALUES
    yaml = tmp_path / "pcrs.yaml"
    yaml.write_text(
        f"sha256:\n  15: 0x{'00' * 32}\n  16 : 0x{PCR16.upper()}\n  22 : 0x{'FF' * 32}\n"
    )
    values = tmp_path / "pcrs.bin"
    values.write_bytes(b"".join(VALUES["sha256"].values()))
    marshaled = tmp_path / "pcrs.marshaled"
    marshaled.write_bytes(
        bytes.fromhex("00000001000b03008041")
        + struct.pack(">II", 1, 3)
        + b"".join(struct.pack(">H", 32) + v for v in VALUES["sha256"].values())
    )
    assert parse_pcrs_marshaled(marshaled.read_bytes()) == VALUES
    for path in (yaml, values, marshaled):
        run = run_quote_cli(*_args(keylime, **{"--pcrs": path}))
        assert run.code == 0, (path.name, run.stderr)


@pytest.mark.corpus
def test_plain_signature(run_quote_cli, keylime: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain = tmp_path / "quotesig.plain"
    plain.write_bytes((keylime / "quotesig.out").read_bytes()[6:])  # the bare RSA signature
    for ak in ("ak.pub", "akpub.pem"):
        run = run_quote_cli(*_args(keylime, **{"--signature": plain, "--ak-public": keylime / ak}))
        assert run.code == 0, run.stderr


@pytest.mark.corpus
def test_wrong_nonce_fails_with_message(run_quote_cli, keylime: Path) -> None:  # type: ignore[no-untyped-def]
    run = run_quote_cli(*_args(keylime, **{"--nonce": "00" + NONCE[2:]}))
    assert run.code == 1
    assert run.stderr.splitlines() == [
        "Error: The quote was not made for this challenge: its nonce (extraData, 20 bytes) is "
        "not the nonce the verifier sent (20 bytes).",
        "What to do: The quote is stale or replayed, or answers another challenge: ask the host "
        "for a new quote over a fresh nonce. If it happens again, the host may be replaying old "
        "evidence: treat it as untrusted.",
        "Known issue: Attestation failed: the host's evidence does not verify (hostseal doctor "
        "finding attestation-evidence-invalid)",
    ]
    run = run_quote_cli(*_args(keylime, **{"--nonce": "00" + NONCE[2:]}), "--json")
    assert run.code == 1
    data = json.loads(run.stdout)
    assert data["error"] == "NonceMismatch"
    assert data["checks"]["signature"] == "passed" and data["checks"]["nonce"] == "failed"


@pytest.mark.corpus
def test_changed_pcr_file_fails(run_quote_cli, keylime: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = bytearray((keylime / "quotepcr.out").read_bytes())
    raw[136 + 4 + 66 + 2] ^= 1  # the first byte of the second digest (PCR 16)
    changed = tmp_path / "pcrs.out"
    changed.write_bytes(bytes(raw))
    run = run_quote_cli(*_args(keylime, **{"--pcrs": changed}))
    assert run.code == 1
    assert run.stderr.startswith(
        "Error: The PCR values presented are not the values the TPM quoted: their sha256 digest"
    )


@pytest.mark.corpus
def test_certify_is_not_a_quote(run_quote_cli, keylime: Path, corpus: Path) -> None:  # type: ignore[no-untyped-def]
    certify = corpus / "py_webauthn/derived/test_verify_attestation_dell_xps_13"
    run = run_quote_cli(*_args(keylime, **{"--quote": certify / "certInfo_tpms_attest.bin"}))
    assert run.code == 1
    assert run.stderr.startswith(
        "Error: The attestation is not a quote: its type is TPM_ST_ATTEST_CERTIFY (0x8017"
    )
    run = run_quote_cli(
        *_args(keylime, **{"--quote": certify / "certInfo_tpms_attest.bin"}), "--json"
    )
    data = run.json()
    assert (run.code, data["error"], data["type"]) == (1, "NotAQuote", "0x8017")
    assert data["checks"]["quote"] == "failed" and data["checks"]["signature"] == "not run"


@pytest.mark.corpus
def test_pcrs_from_a_log_that_does_not_cover_them(run_quote_cli, vectors, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    v = vectors["cos85-nonce9009-sha256"]
    files = {}
    for name, data in (
        ("ak", v.ak),
        ("quote", v.attest),
        ("sig", v.signature),
        ("log", v.eventlog),
    ):
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    args = ["verify", "--ak-public", files["ak"], "--quote", files["quote"]]
    args += ["--signature", files["sig"], "--nonce", "9009", "--eventlog", files["log"]]
    run = run_quote_cli(*args)  # the quote covers PCR 10 (IMA), which the log does not extend
    assert run.code == 1
    assert run.stderr.startswith("Error: The event log does not account for the quoted PCRs:")
    pcrs = tmp_path / "pcrs.yaml"
    pcrs.write_text(
        "sha256:\n" + "".join(f"  {n} : 0x{x.hex()}\n" for n, x in v.pcrs["sha256"].items())
    )
    run = run_quote_cli(*args, "--pcrs", pcrs)
    assert run.code == 0, run.stderr
    assert "  eventlog       passed  45 events replay to the quoted values" in run.stdout


def test_usage_errors(run_quote_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    files = ["--ak-public", empty, "--quote", empty, "--signature", empty]
    run = run_quote_cli("verify", *files, "--nonce", "xyz")
    assert run.code == 2
    assert "'xyz' is not hex" in run.stderr
