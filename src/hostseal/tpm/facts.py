"""Facts about a TPM that operators need: vendor, firmware, kind, PCR banks.

Pure data and decoding; :mod:`hostseal.tpm.device` fills it from the TPM's capabilities. Vendor
IDs, their names and the kind of TPM each vendor makes are TCG knowledge: :mod:`hostseal.tcg`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hostseal import tcg


def vendor_string(values: list[int]) -> str:
    """TPM2_PT_VENDOR_STRING_1..4 joined, printable characters only."""
    raw = b"".join(v.to_bytes(4, "big") for v in values)
    return "".join(ch for ch in raw.decode("ascii", "replace") if ch.isprintable()).strip()


def firmware_version(v1: int, v2: int) -> str:
    """TPM2_PT_FIRMWARE_VERSION_1/2 as the four 16-bit parts vendors print (a.b.c.d)."""
    return f"{v1 >> 16}.{v1 & 0xFFFF}.{v2 >> 16}.{v2 & 0xFFFF}"


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
        return tcg.vendor_name(self.vendor_id) or f"unknown vendor {self.vendor_id!r}"

    @property
    def active_banks(self) -> list[str]:
        return [bank for bank, pcrs in self.pcr_banks.items() if pcrs]

    @property
    def sha256_active(self) -> bool:
        return bool(self.pcr_banks.get("sha256"))
