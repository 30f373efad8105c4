"""The readers of tpm2-tools' files (:mod:`hostseal.attest.tpm2tools`): their errors, and a
``tpm2_quote`` output read as PCR values. The formats against real files are in
test_quote_cli.py, the fuzzing in test_tpm_structures_fuzz.py."""

from __future__ import annotations

import pytest

from hostseal.attest.errors import QuoteMalformed
from hostseal.attest.tpm2tools import bank_size, parse_pcr_yaml, read_pcr_file
from hostseal.attest.tpm_structures import PcrSelection

SEL = (PcrSelection(0x000B, (15, 16, 22)),)


def test_pcr_file_errors() -> None:
    with pytest.raises(QuoteMalformed) as info:
        read_pcr_file(b"\x01\x02\x03", SEL)
    assert info.value.message == (
        "PCR file: 3 bytes that are not PCR values in a format hostseal reads (a 'values' file "
        "for this quote would be 96 bytes)."
    )
    with pytest.raises(QuoteMalformed, match="line 2: 'zz' is not a hex value"):
        parse_pcr_yaml("sha256:\n  0 : zz\n")
    with pytest.raises(QuoteMalformed, match=r"line 1: a PCR value outside a bank \('sha256:'\)"):
        parse_pcr_yaml("0 : 0x00\n")
    with pytest.raises(QuoteMalformed, match="line 3: sha256 PCR 0 is listed twice"):
        parse_pcr_yaml("sha256:\n  0 : 0x00\n  0 : 0x01\n")
    quote_output = "quoted: ff54\nsignature:\n  alg: rsassa\npcrs:\n  sha1:\n    1 : 0xAA\n"
    assert parse_pcr_yaml(quote_output) == {"sha1": {1: b"\xaa"}}


def test_bank_size() -> None:
    assert bank_size("sha256") == 32
    with pytest.raises(QuoteMalformed, match="the PCR bank 'md5' is not one hostseal knows"):
        bank_size("md5")
