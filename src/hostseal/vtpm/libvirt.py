"""The VM side: prerequisites in a libvirt domain definition, the ``<tpm>`` element, and the
QEMU arguments that attach a vTPM.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from hostseal.vtpm.errors import VmPrerequisitesNotMet, VtpmError
from hostseal.vtpm.record import VtpmRecord

TPM_MACHINES = ("q35", "virt")


@dataclass(frozen=True)
class Problem:
    what: str
    remedy: str


def check_domain(xml_text: str) -> list[Problem]:
    """What keeps this VM from taking a vTPM (UEFI firmware, a TPM-capable machine type)."""
    try:
        domain = ET.fromstring(xml_text)  # noqa: S314 -- local file given by the operator
    except ET.ParseError as err:
        raise VtpmError(
            f"The domain XML cannot be parsed ({err}).",
            "Give the output of: virsh dumpxml VM",
        ) from None
    if domain.tag != "domain":
        raise VtpmError(
            f"The XML is a <{domain.tag}>, not a libvirt <domain>.",
            "Give the output of: virsh dumpxml VM",
        )
    name = domain.findtext("name") or "the VM"
    problems: list[Problem] = []
    os_el = domain.find("os")
    loader = os_el.find("loader") if os_el is not None else None
    firmware = os_el.get("firmware", "") if os_el is not None else ""
    loader_path = (loader.text or "") if loader is not None else ""
    efi = firmware == "efi" or (
        loader is not None
        and (
            loader.get("type") == "pflash"
            or any(word in loader_path.upper() for word in ("OVMF", "AAVMF", "EDK2", "EFI"))
        )
    )
    if not efi:
        problems.append(
            Problem(
                f"{name} boots with legacy BIOS firmware; a vTPM needs UEFI firmware (the guest "
                "OS uses the TPM through UEFI, and measured boot needs it).",
                f"Switch it to UEFI: virt-xml {name} --edit --boot firmware=efi (or set <os "
                "firmware='efi'>). The guest OS must be installed for UEFI.",
            )
        )
    type_el = os_el.find("type") if os_el is not None else None
    machine = type_el.get("machine", "") if type_el is not None else ""
    if not any(kind in machine for kind in TPM_MACHINES):
        problems.append(
            Problem(
                f"{name} has machine type {machine or '(none given)'!r}, which cannot take a "
                "TPM CRB device; vTPMs need a q35 (x86_64) or virt (aarch64) machine.",
                f"Use a q35 machine: virt-xml {name} --edit --machine q35 (the VM needs a "
                "recent virtual hardware version; re-create it if the guest cannot move).",
            )
        )
    return problems


def require_domain(xml_text: str) -> None:
    problems = check_domain(xml_text)
    if problems:
        raise VmPrerequisitesNotMet(
            " ".join(p.what for p in problems),
            " ".join(p.remedy for p in problems),
            details={"problems": [{"what": p.what, "remedy": p.remedy} for p in problems]},
        )


def tpm_xml(record: VtpmRecord, vm_dir: Path, backend: str = "emulator") -> str:
    """The ``<tpm>`` element for the domain.

    ``emulator``: libvirt runs swtpm itself, with the state encrypted under the libvirt secret
    ``record.uuid`` (its value: the vTPM's data key; libvirt derives the same state key).
    ``external``: QEMU connects to the swtpm hostseal started (``hostseal vtpm start``).
    """
    if backend == "emulator":
        return (
            "<tpm model='tpm-crb'>\n"
            "  <backend type='emulator' version='2.0'>\n"
            f"    <encryption secret={quoteattr(record.uuid)}/>\n"
            "  </backend>\n"
            "</tpm>\n"
        )
    if backend == "external":
        sock = quoteattr(str(vm_dir / "swtpm.sock"))
        return (
            "<tpm model='tpm-crb'>\n"
            "  <backend type='external'>\n"
            f"    <source type='unix' mode='connect' path={sock}/>\n"
            "  </backend>\n"
            "</tpm>\n"
        )
    raise VtpmError(f"Unknown backend {backend!r}.", "Use emulator or external.")


def secret_xml(record: VtpmRecord) -> str:
    """The libvirt secret that ``<encryption secret=...>`` names (its value is set apart)."""
    return (
        "<secret ephemeral='no' private='yes'>\n"
        f"  <uuid>{record.uuid}</uuid>\n"
        f"  <description>vTPM state key of {record.name} (hostseal)</description>\n"
        "  <usage type='vtpm'>\n"
        f"    <name>{record.name}</name>\n"
        "  </usage>\n"
        "</secret>\n"
    )


def qemu_args(vm_dir: Path) -> list[str]:
    """QEMU arguments for a vTPM started by ``hostseal vtpm start`` (control socket)."""
    return [
        "-chardev",
        f"socket,id=chrtpm,path={vm_dir / 'swtpm.sock'}",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-crb,tpmdev=tpm0",
    ]
