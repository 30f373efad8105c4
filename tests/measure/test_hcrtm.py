"""H-CRTM: PCR 0 after a locality-4 _TPM_Hash_Start before TPM2_Startup.

TPM Library Part 1 (H-CRTM) and Part 3 (_TPM_Hash_End): when the hash sequence ends before
TPM2_Startup, the TPM resets PCR 0 to ``00..04`` and extends the H-CRTM digest into it; the
TPM2_Startup that follows leaves PCR 0 alone, whatever its locality. The log records the extend
as EV_EFI_HCRTM_EVENT ("HCRTM"); firmware may or may not add a StartupLocality event saying 4.
The expected values here are folded with hashlib from the spec's rule, not by the replay code.
"""

from __future__ import annotations

import hashlib

import pytest

from hostseal.measure import compare_pcrs, parse_event_log, replay

from ._boots import boot_log

BANKS = ("sha1", "sha256", "sha384")
HCRTM_CODE = b"H-CRTM code the platform hashed at locality 4"


def spec_pcrs(
    extends: list[tuple[int, dict[str, bytes]]], pcr0_start: int
) -> dict[str, dict[int, bytes]]:
    """What the TPM holds: PCR 0 reset to 00..0<pcr0_start>, the others to zero, then extends."""
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank in BANKS:
        size = hashlib.new(bank).digest_size
        values = {0: bytes(size - 1) + bytes((pcr0_start,))}
        for pcr, digests in extends:
            values[pcr] = hashlib.new(bank, values.get(pcr, bytes(size)) + digests[bank]).digest()
        pcrs[bank] = values
    return pcrs


HCRTM_BOOTS = {
    # (StartupLocality event, H-CRTM code) -> where PCR 0 starts on the TPM
    "H-CRTM without a StartupLocality event": (None, HCRTM_CODE, 4),
    "H-CRTM with StartupLocality 4": (4, HCRTM_CODE, 4),
    "H-CRTM, StartupLocality 0 (Startup after H-CRTM keeps PCR 0)": (0, HCRTM_CODE, 4),
    "H-CRTM, StartupLocality 3 (Startup after H-CRTM keeps PCR 0)": (3, HCRTM_CODE, 4),
    "S-CRTM at locality 3, no H-CRTM": (3, None, 3),
    "S-CRTM at locality 0, no H-CRTM": (None, None, 0),
}


@pytest.mark.parametrize(("locality", "hcrtm", "pcr0_start"), HCRTM_BOOTS.values(), ids=HCRTM_BOOTS)
def test_pcr0_starts_as_the_tpm_library_says(
    locality: int | None, hcrtm: bytes | None, pcr0_start: int
) -> None:
    raw, extends = boot_log(banks=BANKS, locality=locality, hcrtm=hcrtm)
    log = parse_event_log(raw)
    tpm = spec_pcrs(extends, pcr0_start)
    replayed = replay(log)
    for bank in BANKS:
        assert replayed[bank][0] == tpm[bank][0], bank
        assert replayed[bank] == {p: v for p, v in tpm[bank].items() if p in replayed[bank]}
    assert compare_pcrs(log, tpm) == []


def test_the_hcrtm_event_is_the_hash_of_the_hcrtm_code_extended_onto_00_04() -> None:
    raw, _extends = boot_log(banks=("sha256",), hcrtm=HCRTM_CODE)
    log = parse_event_log(raw)
    event = log.events[1]
    assert (event.pcr, event.event_type, event.data) == (0, 0x80000010, b"HCRTM")
    assert event.digests["sha256"] == hashlib.sha256(HCRTM_CODE).digest()
    after_hcrtm = hashlib.sha256(bytes(31) + b"\x04" + hashlib.sha256(HCRTM_CODE).digest())
    rest = [e.digests["sha256"] for e in log.events[2:] if e.pcr == 0]
    value = after_hcrtm.digest()
    for digest in rest:
        value = hashlib.sha256(value + digest).digest()
    assert replay(log)["sha256"][0] == value


def test_a_pcr0_from_zero_is_a_mismatch_on_an_hcrtm_boot() -> None:
    # The wrong start (PCR 0 from 00..00) must not pass for the H-CRTM boot.
    raw, extends = boot_log(banks=BANKS, hcrtm=HCRTM_CODE)
    log = parse_event_log(raw)
    wrong = spec_pcrs(extends, 0)
    mismatches = compare_pcrs(log, {"sha256": {0: wrong["sha256"][0]}})
    assert [(m.bank, m.pcr) for m in mismatches] == [("sha256", 0)]
    assert mismatches[0].expected == spec_pcrs(extends, 4)["sha256"][0]
