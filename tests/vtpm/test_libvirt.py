"""VM prerequisites (a scenario table), the libvirt <tpm> element and QEMU arguments."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostseal import vtpm
from hostseal.vtpm import VtpmRecord


def domain(os_xml: str, name: str = "web1") -> str:
    return f"<domain type='kvm'><name>{name}</name><os>{os_xml}</os></domain>"


@dataclass(frozen=True)
class Case:
    xml: str
    problems: tuple[str, ...]  # words each problem must contain, in order


CASES = {
    "q35 with firmware='efi'": Case(
        domain("<type arch='x86_64' machine='pc-q35-8.2'>hvm</type>").replace(
            "<os>", "<os firmware='efi'>"
        ),
        (),
    ),
    "q35 with an OVMF loader": Case(
        domain(
            "<type arch='x86_64' machine='pc-q35-7.2'>hvm</type>"
            "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
        ),
        (),
    ),
    "aarch64 virt with AAVMF": Case(
        domain(
            "<type arch='aarch64' machine='virt-8.2'>hvm</type>"
            "<loader readonly='yes'>/usr/share/AAVMF/AAVMF_CODE.fd</loader>"
        ),
        (),
    ),
    "legacy BIOS on q35": Case(
        domain("<type arch='x86_64' machine='pc-q35-8.2'>hvm</type>"), ("legacy BIOS",)
    ),
    "UEFI on i440fx": Case(
        domain("<type arch='x86_64' machine='pc-i440fx-8.2'>hvm</type>").replace(
            "<os>", "<os firmware='efi'>"
        ),
        ("pc-i440fx-8.2",),
    ),
    "BIOS on i440fx": Case(
        domain("<type arch='x86_64' machine='pc-i440fx-8.2'>hvm</type>"),
        ("legacy BIOS", "pc-i440fx-8.2"),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_domain_prerequisites(case: Case) -> None:
    problems = vtpm.check_domain(case.xml)
    assert len(problems) == len(case.problems)
    for problem, word in zip(problems, case.problems, strict=True):
        assert word in problem.what
        assert "virt-xml web1 --edit" in problem.remedy


def test_prerequisite_messages() -> None:
    with pytest.raises(vtpm.VmPrerequisitesNotMet) as err:
        vtpm.require_domain(CASES["BIOS on i440fx"].xml)
    assert err.value.message.startswith(
        "web1 boots with legacy BIOS firmware; a vTPM needs UEFI firmware"
    )
    assert "virt-xml web1 --edit --boot firmware=efi" in err.value.remedy
    assert "virt-xml web1 --edit --machine q35" in err.value.remedy
    assert len(err.value.to_dict()["problems"]) == 2  # type: ignore[arg-type]
    with pytest.raises(vtpm.VtpmError, match="cannot be parsed"):
        vtpm.check_domain("<domain>")
    with pytest.raises(vtpm.VtpmError, match="not a libvirt <domain>"):
        vtpm.check_domain("<network/>")


def _record() -> VtpmRecord:
    return VtpmRecord(name="web1", uuid="6e5e3d8e-1f2a-4c1b-9d7e-0a1b2c3d4e5f", key={})


def test_libvirt_tpm_element() -> None:
    emulator = ET.fromstring(vtpm.tpm_xml(_record(), Path("/v/vms/web1")))
    assert emulator.tag == "tpm" and emulator.get("model") == "tpm-crb"
    backend = emulator.find("backend")
    assert backend is not None
    assert backend.attrib == {"type": "emulator", "version": "2.0"}
    encryption = backend.find("encryption")
    assert encryption is not None and encryption.get("secret") == _record().uuid

    external = ET.fromstring(vtpm.tpm_xml(_record(), Path("/v/vms/web1"), "external"))
    source = external.find("backend/source")
    assert source is not None and source.get("path") == "/v/vms/web1/swtpm.sock"

    secret = ET.fromstring(vtpm.secret_xml(_record()))
    assert secret.findtext("uuid") == _record().uuid
    assert secret.get("private") == "yes"


def test_qemu_args() -> None:
    assert vtpm.qemu_args(Path("/v/vms/web1")) == [
        "-chardev",
        "socket,id=chrtpm,path=/v/vms/web1/swtpm.sock",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-crb,tpmdev=tpm0",
    ]
