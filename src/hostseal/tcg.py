"""TCG knowledge: TPM vendor IDs, their companies, and what kind of TPM each vendor makes.

The one table of TPM vendors in hostseal, used by ``hostseal tpm info`` (the TPM's
TPM2_PT_MANUFACTURER property), EK-certificate verification (the TPM manufacturer attribute of
the certificate, ``id:494E5443``) and the dashboard. Pure data and decoding: it imports nothing,
so every package may use it.

Vendor IDs are those of the TCG "TPM Vendor ID Registry" (family 2.0): four ASCII characters,
shorter ones padded with NUL or space. The kind of TPM is a heuristic from the vendor, as the
vendor ID is all a TPM or its EK certificate says about how it is built:

* **firmware** -- a TPM running in the processor's or chipset's security firmware: Intel (PTT),
  AMD (fTPM), Qualcomm and Rockchip (TrustZone), and Microsoft. Microsoft's ID (``MSFT``) is
  reported both by Pluton, the security processor inside recent AMD, Intel and Qualcomm CPUs,
  and by Hyper-V's virtual TPM. It counts as firmware: every Microsoft EK CA in the corpus of
  real vendor certificates (tpm-ca-certificates: Microsoft Pluton Root CA 2021, the Pluton
  factory EK intermediate) is Pluton's, none a Hyper-V one, and hostseal runs on hypervisor
  hosts, not inside Hyper-V guests. A software TPM reached over a software transport is virtual
  whatever its vendor (:func:`tpm_kind`).
* **virtual** -- ``IBM`` (the ID of libtpms, so of swtpm and QEMU/libvirt vTPMs) and ``GOOG``
  (the vTPM of Google Compute Engine).
* **discrete** -- every other vendor: a TPM chip (Infineon, STMicroelectronics, Nuvoton...).
"""

from __future__ import annotations

from typing import Final

KIND_DISCRETE: Final = "discrete"
KIND_FIRMWARE: Final = "firmware"
KIND_VIRTUAL: Final = "virtual"

#: TCG vendor ID -> the company (for IBM: the software TPM its ID stands for).
VENDORS: Final[dict[str, str]] = {
    "AMD": "AMD",
    "ANT": "Ant Group",
    "ATML": "Atmel",
    "BRCM": "Broadcom",
    "CSCO": "Cisco",
    "FLYS": "Flyslice Technologies",
    "ROCC": "Fuzhou Rockchip",
    "GOOG": "Google",
    "HPI": "HPI",
    "HPE": "HPE",
    "HISI": "Huawei",
    "IBM": "IBM software TPM (swtpm)",
    "IFX": "Infineon",
    "INTC": "Intel",
    "LEN": "Lenovo",
    "MSFT": "Microsoft",
    "NSM": "National Semiconductor",
    "NTZ": "Nationz",
    "NTC": "Nuvoton",
    "QCOM": "Qualcomm",
    "SMSC": "SMSC",
    "STM": "STMicroelectronics",
    "SMSN": "Samsung",
    "SNS": "Sinosun",
    "TXN": "Texas Instruments",
    "WEC": "Winbond",
    "SECE": "SecEdge",
}

FIRMWARE_VENDORS: Final = frozenset({"INTC", "AMD", "QCOM", "ROCC", "MSFT"})
VIRTUAL_VENDORS: Final = frozenset({"IBM", "GOOG"})


def vendor_name(vendor_id: str) -> str | None:
    """The company behind a TCG vendor ID, None for an ID the registry does not hold."""
    return VENDORS.get(vendor_id)


def tpm_kind(vendor_id: str, *, software_transport: bool = False) -> str:
    """``"discrete"``, ``"firmware"`` or ``"virtual"``: from the vendor and, when the TPM is
    reached over a software transport (swtpm, the simulator), virtual whatever the vendor."""
    if software_transport or vendor_id in VIRTUAL_VENDORS:
        return KIND_VIRTUAL
    if vendor_id in FIRMWARE_VENDORS:
        return KIND_FIRMWARE
    return KIND_DISCRETE


def vendor_id_from_u32(value: int) -> str:
    """The vendor ID in TPM2_PT_MANUFACTURER: four ASCII characters packed big-endian."""
    raw = value.to_bytes(4, "big")
    return raw.decode("ascii", "replace").rstrip("\x00 ")


def vendor_id_from_attribute(manufacturer: str) -> str | None:
    """The vendor ID in an EK certificate's TPM manufacturer attribute (``id:494E5443`` ->
    ``INTC``); the text itself when it is not hex, None when it holds only padding."""
    text = manufacturer.removeprefix("id:")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return manufacturer
    return raw.rstrip(b"\0 ").decode("ascii", "replace") or None
