"""The parts of the real-firmware lab that need no boot (fast; not marked realboot): the
firmware's variable store, grub.cfg, the ESP image, swtpm's control channel, the relay that
forwards a guest's connections, and the CLI's dispatch between the two kinds of lab host."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostseal import lab
from hostseal.cli.main import cli
from hostseal.lab import realimage, tpmctrl, varstore, vm, vmproc

MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
EMPTY_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    missing += [str(p) for p in (MS_VARS, EMPTY_VARS) if not p.is_file()]
    if missing:
        if os.environ.get("HOSTSEAL_REQUIRE_REALBOOT"):
            pytest.fail(f"required (HOSTSEAL_REQUIRE_REALBOOT) but missing: {missing}")
        pytest.skip(f"missing: {', '.join(missing)} (run ./scripts/setup)")


# -- the variable store ----------------------------------------------------------------------


def test_secure_boot_off_and_on_again_in_the_variable_store(tmp_path: Path) -> None:
    _need()
    store = tmp_path / "vars.fd"
    shutil.copyfile(MS_VARS, store)
    before = {(v.name, v.guid): v.data for v in varstore.variables(store)}
    assert varstore.secure_boot_enabled(store)
    varstore.set_secure_boot(store, False)
    assert not varstore.secure_boot_enabled(store)
    after = {(v.name, v.guid): v.data for v in varstore.variables(store)}
    key = ("SecureBootEnable", varstore.SECURE_BOOT_ENABLE_GUID)
    assert after[key] == b"\0" and before[key] == b"\x01"
    assert {k: v for k, v in after.items() if k != key} == {
        k: v for k, v in before.items() if k != key
    }  # PK, KEK, db, dbx stay enrolled
    varstore.set_secure_boot(store, True)
    assert store.read_bytes() == MS_VARS.read_bytes()


def test_a_missing_secure_boot_enable_variable_is_added(tmp_path: Path) -> None:
    _need()
    store = tmp_path / "vars.fd"
    raw = bytearray(MS_VARS.read_bytes())
    (old,) = [v for v in varstore.variables(MS_VARS) if v.name == "SecureBootEnable"]
    raw[old.offset + 2] &= 0xFD  # deleted, as the firmware deletes a variable
    store.write_bytes(bytes(raw))
    assert varstore.secure_boot_enabled(store)  # absent: on, since a PK is enrolled
    varstore.set_secure_boot(store, False)
    found = [v for v in varstore.variables(store) if v.name == "SecureBootEnable"]
    assert [(v.data, v.attributes) for v in found] == [(b"\0", 3)]
    assert found[0].offset > old.offset
    assert not varstore.secure_boot_enabled(store)


def test_a_store_without_keys_cannot_have_secure_boot(tmp_path: Path) -> None:
    _need()
    store = tmp_path / "vars.fd"
    shutil.copyfile(EMPTY_VARS, store)
    assert not varstore.secure_boot_enabled(store)
    with pytest.raises(varstore.VarstoreError, match="no Platform Key enrolled") as err:
        varstore.set_secure_boot(store, True)
    assert "OVMF_VARS_4M.ms.fd" in err.value.remedy
    (tmp_path / "junk.fd").write_bytes(bytes(4096))
    with pytest.raises(varstore.VarstoreError, match="not an OVMF variable store"):
        varstore.variables(tmp_path / "junk.fd")


# -- grub.cfg and the ESP --------------------------------------------------------------------


def test_grub_cfg_loader_and_command_line() -> None:
    efi = realimage.grub_cfg("6.1.0-9-amd64", "quiet hostseal=1", linuxefi=True)
    plain = realimage.grub_cfg("6.1.0-9-amd64", "", linuxefi=False)
    assert "\tlinuxefi /boot/vmlinuz-6.1.0-9-amd64 root=UUID=" in efi
    assert "\tinitrdefi /boot/initrd.img-6.1.0-9-amd64\n" in efi
    assert efi.count("console=ttyS0 quiet hostseal=1\n") == 1
    assert "\tlinux /boot/vmlinuz-6.1.0-9-amd64 " in plain and "efi " not in plain
    assert plain.rstrip().endswith("}")


def test_the_esp_image_is_reproducible_and_rewritable(tmp_path: Path) -> None:
    _need("mkfs.vfat", "mcopy", "mtype")
    files = {"EFI/BOOT/BOOTX64.EFI": b"shim" * 1000, "EFI/BOOT/grubx64.efi": b"grub"}
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    realimage.make_esp(a, files, "grub one\n")
    realimage.make_esp(b, files, "grub one\n")
    assert a.read_bytes() == b.read_bytes()
    realimage.write_esp_files(a, {"EFI/debian/grub.cfg": b"grub two\n", "x/y/keys": b"k\n"})
    for path, content in (("EFI/debian/grub.cfg", "grub two\n"), ("x/y/keys", "k\n")):
        shown = subprocess.run(
            ["mtype", "-i", str(a), f"::/{path}"], capture_output=True, text=True, check=True
        )
        assert shown.stdout == content


def test_the_recipe_names_the_cached_image() -> None:
    assert len(realimage.recipe_hash()) == 16
    assert realimage.recipe_hash() == realimage.recipe_hash()
    assert realimage.recipe()["kernel"] == "linux-image-amd64"
    assert realimage.default_cache_dir({"HOSTSEAL_LAB_CACHE": "/x/y"}) == Path("/x/y")


# -- swtpm's control channel -----------------------------------------------------------------


def test_swtpm_control_channel_reads_clears_and_stops_a_tpm(tmp_path: Path) -> None:
    _need("swtpm", "swtpm_setup")
    state, sock = tmp_path / "tpm", tmp_path / "ctrl.sock"
    state.mkdir()
    subprocess.run(
        ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--pcr-banks", "sha256"],
        capture_output=True,
        check=True,
    )
    proc = subprocess.Popen(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={state}",
            "--ctrl",
            f"type=unixio,path={sock}",
        ],
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            threading.Event().wait(0.02)
        with tpmctrl.channel(sock) as ch:
            tpmctrl.power_on(ch)
            pcrs = tpmctrl.pcr_read(ch, "sha256")
            assert sorted(pcrs) == list(range(24))
            assert pcrs[0] == bytes(32) and pcrs[17] == b"\xff" * 32
            with pytest.raises(tpmctrl.TpmCtrlError, match="no sha1 PCR bank"):
                tpmctrl.pcr_read(ch, "sha1")
            tpmctrl.clear(ch)
            tpmctrl.shutdown_and_stop(ch)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(tpmctrl.TpmCtrlError, match="Cannot reach swtpm"):
        tpmctrl.channel(sock).__enter__()


# -- the relay of guestfwd -------------------------------------------------------------------


def _serve_once(handler: object) -> int:
    server = socket.create_server(("127.0.0.1", 0))
    port: int = server.getsockname()[1]

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            handler(conn)  # type: ignore[operator]
        server.close()

    threading.Thread(target=run, daemon=True).start()
    return port


def test_the_relay_passes_the_servers_close_to_the_guest() -> None:
    port = _serve_once(lambda conn: conn.sendall(b"hello"))
    relay = subprocess.Popen(
        [sys.executable, "-I", "-S", str(vmproc.RELAY), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert relay.stdout is not None
    assert relay.stdout.read() == b"hello"  # EOF although the guest never closed its side
    assert relay.wait(timeout=10) == 0
    assert relay.stdin is not None
    relay.stdin.close()


def test_the_relay_passes_the_guests_close_to_the_server() -> None:
    def count_then_answer(conn: socket.socket) -> None:
        got = b""
        while chunk := conn.recv(4096):
            got += chunk
        conn.sendall(str(len(got)).encode())

    port = _serve_once(count_then_answer)
    out = subprocess.run(
        [sys.executable, "-I", "-S", str(vmproc.RELAY), str(port)],
        input=b"x" * 100_000,
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert out.stdout == b"100000"


# -- the two kinds of lab host ---------------------------------------------------------------


def _fake_vm(lab_dir: Path, name: str) -> None:
    host = vm.VmHost(name=name, path=lab_dir / name, image="/nonexistent", kernel_version="k")
    host.path.mkdir(parents=True)
    host.save()


def test_vm_records_are_told_apart_from_simulated_ones(tmp_path: Path) -> None:
    _fake_vm(tmp_path, "v1")
    assert vm.is_vm(tmp_path, "v1") and not vm.is_vm(tmp_path, "nope")
    assert [h.name for h in vm.list_hosts(tmp_path)] == ["v1"]
    assert lab.list_hosts(tmp_path) == []
    with pytest.raises(lab.LabError, match="is a real-firmware host"):
        lab.load(tmp_path, "v1")
    with pytest.raises(vm.VmError, match="no real-firmware lab host 'nope'") as err:
        vm.load(tmp_path, "nope")
    assert "--firmware ovmf" in err.value.remedy
    assert not vm.load(tmp_path, "v1").running
    # a record held from before a reboot reads the console of the boot recorded on disk now
    old = vm.load(tmp_path, "v1")
    (old.path / "console.log").write_bytes(b"boot one\r\nboot two\r\n")
    newer = vm.load(tmp_path, "v1")
    newer.console_offset = len(b"boot one\r\n")
    newer.save()
    assert vm.console(old) == "boot two\n"
    assert vm.console(old, all_boots=True) == "boot one\nboot two\n"
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "host.json").write_text('{"kind": "vm", "image": "x"}')
    with pytest.raises(vm.VmError, match=r"'v2' .* is damaged \(KeyError: 'kernel_version'\)"):
        vm.load(tmp_path, "v2")


def test_the_cli_lists_both_kinds_and_refuses_mixed_options(tmp_path: Path) -> None:
    _fake_vm(tmp_path, "v1")
    env = {"HOSTSEAL_LAB_DIR": str(tmp_path)}
    runner = CliRunner()
    listed = runner.invoke(cli, ["lab", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (record,) = json.loads(listed.output)
    assert (record["name"], record["kind"], record["running"]) == ("v1", "vm", False)
    mixed = runner.invoke(
        cli, ["lab", "start", "v2", "--firmware", "ovmf", "--kernel", "k"], env=env
    )
    assert mixed.exit_code == 2 and "--kernel and --bootloader name simulated" in mixed.output
    loader = runner.invoke(cli, ["lab", "start", "s1", "--loader", "linux"], env=env)
    assert loader.exit_code == 2 and "--loader is for real-firmware hosts" in loader.output
    hard = runner.invoke(cli, ["lab", "stop", "nope", "--hard"], env=env)
    assert hard.exit_code == 2
    exec_ = runner.invoke(cli, ["lab", "exec", "v1", "--", "true"], env=env)
    assert isinstance(exec_.exception, vm.VmError)  # main() prints it, exit code 1
    assert "is not running" in exec_.exception.message
    env_ = runner.invoke(cli, ["lab", "env", "v1"], env=env)
    assert env_.exit_code == 2 and "hostseal lab exec v1" in env_.output
