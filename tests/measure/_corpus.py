"""Where the corpus logs and their sources' expectations are, read at collection time so that
tests can be parametrized over every listed log, bank and PCR. Tests still take the ``corpus``
fixture, which skips them (saying why) when the corpus is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("HOSTSEAL_CORPUS") or REPO.parent / "shared" / "realdata")

GO_TPM_TOOLS_LOGS = "go-tpm-tools/internal/test/eventlogs"
TPM2_TOOLS_FIXTURES = "tpm2-tools/test/integration/fixtures"
GO_ATTESTATION_DATA = "go-attestation/attest/testdata"


def load_json(relative: str) -> dict[str, Any]:
    path = CORPUS / relative
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


GO_TPM_TOOLS = load_json("go-tpm-tools/derived/eventlog_expected_pcrs.json")
TPM2_TOOLS = load_json("tpm2-tools/derived_expected_pcrs.json")
GO_ATTESTATION = load_json("go-attestation/derived_expected.json")


def go_attestation_log(name: str) -> str:
    """The log of a go-attestation expectation (the Windows one is a derived raw log)."""
    if name == "windows_gcp_shielded_vm.json":
        return "go-attestation/derived_windows_gcp_shielded_vm.eventlog.bin"
    return f"{GO_ATTESTATION_DATA}/{name}"


def bank_cases(expectations: dict[str, Any], key: str) -> list[tuple[str, str, dict[str, str]]]:
    """(log name, bank, {pcr: hex}) for every log and bank an expectations file lists."""
    cases = []
    for name, entry in expectations.items():
        for bank, pcrs in entry.get(key, {}).items():
            cases.append((name, bank, pcrs))
    return cases


def hex_value(text: str) -> bytes:
    return bytes.fromhex(text.lower().removeprefix("0x"))
