"""Facts about a TPM that operators need: vendor, firmware, kind, PCR banks.

Pure data and decoding; :mod:`hostseal.tpm.device` fills it from the TPM's capabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# TCG "TPM Vendor ID Registry" (family 2.0), the 4-character IDs in TPM2_PT_MANUFACTURER.
VENDORS: dict[str, str] = {
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
    "NTC": "Nuvoton Technology",
    "QCOM": "Qualcomm",
    "SMSC": "SMSC",
    "STM": "STMicroelectronics",
    "SMSN": "Samsung",
    "SNS": "Sinosun",
    "TXN": "Texas Instruments",
    "WEC": "Winbond",
    "SECE": "SecEdge",
}

# How a vendor's TPMs are usually built. A heuristic: Intel (PTT) and AMD (fTPM) ship firmware
# TPMs; IBM's id is the software TPM (swtpm) and Google's the GCE vTPM; the rest make chips.
_FIRMWARE_VENDORS = {"INTC", "AMD", "QCOM", "ROCC"}
_VIRTUAL_VENDORS = {"IBM", "GOOG"}

KIND_DISCRETE = "discrete"
KIND_FIRMWARE = "firmware"
KIND_VIRTUAL = "virtual"


def vendor_id_from_u32(value: int) -> str:
    """TPM2_PT_MANUFACTURER is four ASCII characters packed big-endian, space/NUL padded."""
    raw = value.to_bytes(4, "big")
    return raw.decode("ascii", "replace").rstrip("\x00 ")


def vendor_string(values: list[int]) -> str:
    """TPM2_PT_VENDOR_STRING_1..4 joined, printable characters only."""
    raw = b"".join(v.to_bytes(4, "big") for v in values)
    return "".join(ch for ch in raw.decode("ascii", "replace") if ch.isprintable()).strip()


def firmware_version(v1: int, v2: int) -> str:
    """TPM2_PT_FIRMWARE_VERSION_1/2 as the four 16-bit parts vendors print (a.b.c.d)."""
    return f"{v1 >> 16}.{v1 & 0xFFFF}.{v2 >> 16}.{v2 & 0xFFFF}"


def tpm_kind(vendor_id: str, *, software_transport: bool) -> str:
    """Discrete chip, firmware TPM, or virtual: from the transport and the vendor."""
    if software_transport or vendor_id in _VIRTUAL_VENDORS:
        return KIND_VIRTUAL
    if vendor_id in _FIRMWARE_VENDORS:
        return KIND_FIRMWARE
    return KIND_DISCRETE


@dataclass(frozen=True)
class Problem:
    """A failed prerequisite, with what to do about it."""

    check: str
    message: str
    remedy: str
    severity: str = "fail"  # "fail" | "warn"

    def to_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "remedy": self.remedy,
        }


@dataclass(frozen=True)
class TpmFacts:
    """What :func:`hostseal.tpm.Tpm.facts` reads from a TPM."""

    family: str  # "2.0"
    vendor_id: str
    vendor_string: str
    firmware_version: str
    spec_level: int
    spec_revision: int
    kind: str
    pcr_banks: dict[str, list[int]] = field(default_factory=dict)

    @property
    def vendor_name(self) -> str:
        return VENDORS.get(self.vendor_id, f"unknown vendor {self.vendor_id!r}")

    @property
    def active_banks(self) -> list[str]:
        return [bank for bank, pcrs in self.pcr_banks.items() if pcrs]

    @property
    def sha256_active(self) -> bool:
        return bool(self.pcr_banks.get("sha256"))
