"""The one table of TCG knowledge: vendor IDs as TPMs and EK certificates encode them, their
companies, and the kind of TPM each vendor makes -- the same answer for ``hostseal tpm info``,
EK-certificate verification and the dashboard."""

from __future__ import annotations

import pytest

from hostseal import tcg
from hostseal.tpm.facts import TpmFacts

KINDS = {
    "IFX": tcg.KIND_DISCRETE,
    "STM": tcg.KIND_DISCRETE,
    "NTC": tcg.KIND_DISCRETE,
    "INTC": tcg.KIND_FIRMWARE,
    "AMD": tcg.KIND_FIRMWARE,
    "MSFT": tcg.KIND_FIRMWARE,  # Pluton (see the module's documentation)
    "IBM": tcg.KIND_VIRTUAL,
    "GOOG": tcg.KIND_VIRTUAL,
    "XYZ": tcg.KIND_DISCRETE,  # a vendor the registry does not hold makes chips
}


@pytest.mark.parametrize("vendor", list(KINDS))
def test_kind_of_tpm_by_vendor(vendor: str) -> None:
    assert tcg.tpm_kind(vendor) == KINDS[vendor]
    assert tcg.tpm_kind(vendor, software_transport=True) == tcg.KIND_VIRTUAL


def test_vendor_ids_decode_from_the_tpm_property_and_the_certificate_attribute() -> None:
    assert tcg.vendor_id_from_u32(0x494E5443) == "INTC"
    assert tcg.vendor_id_from_u32(0x49424D00) == "IBM"  # NUL padded
    assert tcg.vendor_id_from_u32(0x53544D20) == "STM"  # space padded
    assert tcg.vendor_id_from_attribute("id:494E5443") == "INTC"
    assert tcg.vendor_id_from_attribute("id:4E544300") == "NTC"
    assert tcg.vendor_id_from_attribute("id:00000000") is None
    assert tcg.vendor_id_from_attribute("Infineon") == "Infineon"  # not hex: kept as written


def test_every_vendor_has_a_name_and_the_kinds_name_registered_vendors() -> None:
    assert tcg.vendor_name("NTC") == "Nuvoton"
    assert tcg.vendor_name("XYZ") is None
    assert all(len(v) <= 4 and v == v.strip() for v in tcg.VENDORS)
    assert set(tcg.VENDORS) >= tcg.FIRMWARE_VENDORS | tcg.VIRTUAL_VENDORS
    assert not tcg.FIRMWARE_VENDORS & tcg.VIRTUAL_VENDORS


def test_tpm_facts_name_the_vendor_from_the_same_table() -> None:
    facts = TpmFacts("2.0", "MSFT", "", "1.0.0.0", 0, 0, tcg.tpm_kind("MSFT"))
    assert (facts.vendor_name, facts.kind) == ("Microsoft", "firmware")
    assert TpmFacts("2.0", "XYZ", "", "", 0, 0, "discrete").vendor_name == "unknown vendor 'XYZ'"
