"""The ``hostseal vtpm`` and ``hostseal keyprovider`` commands, end to end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostseal.cli import main as cli_main
from hostseal.tpm import open_tpm

pytestmark = pytest.mark.swtpm


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A vTPM directory of its own, and the commands registered on the root group."""
    from hostseal.cli import keyprovider, vtpm

    for group in (vtpm.vtpm, keyprovider.keyprovider):
        if group.name not in cli_main.cli.commands:
            cli_main.cli.add_command(group)
    root = Path(tempfile.mkdtemp(prefix="hsc-", dir="/tmp"))
    monkeypatch.setenv("HOSTSEAL_VTPM_DIR", str(root / "v"))
    monkeypatch.delenv("HOSTSEAL_KEYPROVIDER_DIR", raising=False)
    yield root
    from hostseal import vtpm as lib

    dirs = lib.VtpmDirs.at(root / "v")
    for st in lib.list_vtpms(dirs):
        lib.stop(dirs, st.record.name)
    shutil.rmtree(root, ignore_errors=True)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_vtpm_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    password = env / "password"
    password.write_text("a long backup password\n")

    code, out, _ = run(capsys, "keyprovider", "add", "nkp", "--type", "native")
    assert code == 0 and "issues no key until it is backed up" in out
    code, out, err = run(capsys, "vtpm", "create", "vm1")
    assert code == 1
    assert "Error: The native key provider 'nkp' has not been backed up" in err
    assert "What to do: Back it up first: hostseal keyprovider backup nkp --out FILE" in err

    code, out, _ = run(
        capsys,
        "keyprovider",
        "backup",
        "nkp",
        "--out",
        str(env / "nkp.bak"),
        "--password-file",
        str(password),
    )
    assert code == 0 and "backed up" in out
    code, out, _ = run(capsys, "keyprovider", "list", "--json")
    assert json.loads(out)[0]["backed_up"] is True

    code, out, _ = run(capsys, "vtpm", "create", "vm1", "--json")
    assert code == 0 and json.loads(out)["key_provider"] == "nkp"
    code, out, _ = run(capsys, "vtpm", "start", "vm1", "--tcp")
    assert code == 0
    tcti = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("TCTI: "))
    with open_tpm(tcti) as tpm:
        assert len(tpm.get_random(8)) == 8
    code, out, _ = run(capsys, "vtpm", "list", "--json")
    assert [(v["name"], v["running"], v["tcti"]) for v in json.loads(out)] == [("vm1", True, tcti)]
    code, out, _ = run(capsys, "vtpm", "libvirt-xml", "vm1")
    assert "<backend type='emulator' version='2.0'>" in out and "<encryption secret=" in out
    code, out, _ = run(capsys, "vtpm", "qemu-args", "vm1")
    assert "-tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0" in out
    code, out, _ = run(capsys, "vtpm", "stop", "vm1")
    assert code == 0 and "stopped" in out

    code, out, _ = run(capsys, "vtpm", "clone", "vm1", "vm2", "--policy", "copy", "--json")
    assert code == 0 and json.loads(out)["origin"]["kind"] == "clone-copy"
    code, out, _ = run(capsys, "vtpm", "backup", "vm1", "--out", str(env / "vm1.bak"))
    assert code == 0
    code, out, err = run(capsys, "vtpm", "remove", "vm1", "--yes")
    assert code == 0 and "removed" in out
    code, out, _ = run(
        capsys, "vtpm", "restore", str(env / "vm1.bak"), "--to", str(env / "elsewhere"), "--json"
    )
    assert code == 0 and json.loads(out)["name"] == "vm1"
    assert (env / "elsewhere" / "vms" / "vm1" / "vtpm.json").is_file()

    code, out, _ = run(capsys, "vtpm", "ca", "show", "--json")
    assert json.loads(out)["key_provider"] == "nkp"

    code, out, _ = run(capsys, "vtpm", "status", "ghost", "--json")
    assert code == 1 and json.loads(out)["error"] == "VtpmNotFound"


def test_prerequisites_from_domain_xml(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml = env / "vm.xml"
    xml.write_text(
        "<domain><name>old</name><os><type machine='pc-i440fx-8.2'>hvm</type></os></domain>"
    )
    code, _, err = run(capsys, "vtpm", "create", "old", "--domain-xml", str(xml))
    assert code == 1
    assert "old boots with legacy BIOS firmware" in err
    assert "virt-xml old --edit --boot firmware=efi" in err
    code, out, _ = run(capsys, "vtpm", "check-vm", "--domain-xml", str(xml), "--json")
    assert code == 1 and len(json.loads(out)) == 2


def test_password_never_on_the_command_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "keyprovider", "add", "nkp", "--type", "native")
    read_end, write_end = os.pipe()
    os.write(write_end, b"another good password\n")
    os.close(write_end)
    code, _, _ = run(
        capsys,
        "keyprovider",
        "backup",
        "nkp",
        "--out",
        str(env / "b"),
        "--password-fd",
        str(read_end),
    )
    assert code == 0
    wrong = env / "wrong"
    wrong.write_text("not the password\n")
    code, _, err = run(
        capsys,
        "keyprovider",
        "add",
        "restored",
        "--type",
        "native",
        "--from-backup",
        str(env / "b"),
        "--password-file",
        str(wrong),
    )
    assert code == 1
    assert "Error: The password does not open this key provider backup" in err
    code, _, err = run(capsys, "keyprovider", "backup", "nkp", "--out", "x", "--password", "p")
    assert code == 2  # no such option
