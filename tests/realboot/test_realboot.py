"""Real boots: OVMF with Secure Boot, swtpm, Debian's signed shim -> grub -> kernel -> systemd.

One host goes through five cold boots, in the order of the tests below (each stage builds on
the one before; ~3-4 min in all):

1. Secure Boot on: the guest has a TPM, efivars say SecureBoot=1, and the event log the
   firmware left replays with hostseal's parser to the PCRs the guest reads; the guest reaches
   the one forwarded service on this machine (and nothing else); exec and the console work;
2. Secure Boot turned off in the firmware's variables (and a new kernel command line): efivars
   say 0, the log's PCR 7 differs and its SecureBoot event says off, grub passed the new line;
3. the TPM replaced: another EK; PCRs read from outside after a hard stop equal the guest's;
4. the TPM cleared: another storage primary key, the same EK;
5. grub's plain ``linux`` with Secure Boot off: the kernel boots without an event log (seen
   from the emergency shell on the serial console, which the lab's image opens for root);
   powered off from there, the disk read raw holds what the guest wrote in stage 1.
"""

from __future__ import annotations

import json
import mmap
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hostseal.cli.main import cli
from hostseal.lab import vm
from hostseal.measure import parse_event_log, replay, secure_boot_state

pytestmark = pytest.mark.realboot

NAME = "real1"
EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
_seen: dict[str, Any] = {}


def _guest_pcrs(host: vm.VmHost, bank: str) -> dict[int, bytes]:
    out = vm.run_on(
        host,
        f"cd /sys/class/tpm/tpm0/pcr-{bank} && for i in $(seq 0 23); do echo $i $(cat $i); done",
    )
    assert out.rc == 0, out.stderr
    return {int(i): bytes.fromhex(v) for i, v in (line.split() for line in out.stdout.splitlines())}


def _secure_boot_efivar(host: vm.VmHost) -> int:
    raw = vm.read_file(host, SECURE_BOOT_VAR)
    assert len(raw) == 5  # 4 bytes of attributes, then the value
    return raw[4]


def _key_digest(host: vm.VmHost, command: str) -> str:
    out = vm.run_on(host, f"( {command} ) >/dev/null && sha256sum /tmp/key.pub")
    assert out.rc == 0, out.stderr
    return out.stdout.split()[0]


def _ek(host: vm.VmHost) -> str:
    return _key_digest(host, "tpm2_createek -c /tmp/ek.ctx -G rsa -u /tmp/key.pub")


def _srk(host: vm.VmHost) -> str:
    return _key_digest(
        host,
        "tpm2_createprimary -C o -G ecc -c /tmp/srk.ctx && "
        "tpm2_readpublic -c /tmp/srk.ctx -o /tmp/key.pub",
    )


def _count_then_answer(server: socket.socket) -> None:
    """One connection: read until the peer closes its side, answer with the count, close."""
    conn, _ = server.accept()
    with conn:
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        conn.sendall(b"got %d" % len(got))
    server.close()


# in the guest: send 100 kB, close the sending side, print the answer (ends when we close)
_GUEST_CLIENT = """python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(b"x" * 100000)
s.shutdown(socket.SHUT_WR)
out = b""
while chunk := s.recv(4096):
    out += chunk
print(out.decode())
' """


def test_secure_boot_on_gives_a_tpm_and_a_log_that_replays(vm_lab: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=_count_then_answer, args=(server,), daemon=True).start()
    host = vm.start(vm_lab, NAME, guest_port=port)
    assert host.secure_boot
    assert vm.run_on(host, "test -c /dev/tpm0 && test -c /dev/tpmrm0").rc == 0
    assert _secure_boot_efivar(host) == 1
    log = parse_event_log(vm.read_file(host, EVENT_LOG))
    assert secure_boot_state(log) is True
    replayed = replay(log)
    for bank in ("sha1", "sha256"):
        guest = _guest_pcrs(host, bank)
        assert replayed[bank], bank
        assert {pcr: guest[pcr] for pcr in replayed[bank]} == replayed[bank], bank
    _seen["pcr7"] = replayed["sha256"][7]
    _seen["ek"] = _ek(host)
    _seen["marker"] = f"hostseal-marker-{secrets.token_hex(8)}".encode()
    assert vm.run_on(host, f"echo {_seen['marker'].decode()} > /root/marker && sync").rc == 0
    # the one forwarded service answers, with the close passed both ways; nothing else does
    out = vm.run_on(host, f"{_GUEST_CLIENT} {vm.GUEST_SERVICE_ADDRESS} {port}", timeout=60)
    assert (out.rc, out.stdout) == (0, "got 100000\n"), out.stderr
    assert vm.run_on(host, f"{_GUEST_CLIENT} 10.0.2.2 22", timeout=60).rc != 0


def test_exec_and_the_console(vm_lab: Path) -> None:
    host = vm.load(vm_lab, NAME)
    result = vm.run_on(host, "echo out; echo err >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    vm.wait_console(host, r"hostseal-lab login:", timeout=60)
    assert "Secure boot enabled" in vm.console(host)
    vm.type_line(host, "typed-by-the-lab")  # the login prompt echoes the user name
    vm.wait_console(host, r"login: typed-by-the-lab", timeout=30)
    with pytest.raises(vm.VmError, match=r"no console output matching .* after 1 s") as err:
        vm.wait_console(host, r"this never appears", timeout=1)
    assert "typed-by-the-lab" in err.value.message  # the console's tail is in the message
    # the same through the command line
    env = {"HOSTSEAL_LAB_DIR": str(vm_lab)}
    runner = CliRunner()
    ran = runner.invoke(cli, ["lab", "exec", NAME, "--", "sh", "-c", "echo hi; exit 4"], env=env)
    assert (ran.exit_code, ran.output) == (4, "hi\n")
    shown = runner.invoke(cli, ["lab", "console", NAME, "--wait-for", "login:"], env=env)
    assert shown.exit_code == 0 and "typed-by-the-lab" in shown.output
    listed = runner.invoke(cli, ["lab", "list", "--json"], env=env)
    assert [(h["name"], h["kind"], h["running"]) for h in json.loads(listed.output)] == [
        (NAME, "vm", True)
    ]


def test_secure_boot_off_in_the_firmware_changes_pcr_7(vm_lab: Path) -> None:
    host = vm.reboot(vm_lab, NAME, secure_boot=False, cmdline="hostseal.lab=2")
    assert not host.secure_boot
    assert _secure_boot_efivar(host) == 0
    assert "hostseal.lab=2" in vm.run_on(host, "cat /proc/cmdline").stdout
    log = parse_event_log(vm.read_file(host, EVENT_LOG))  # linuxefi: a log with SB off too
    assert secure_boot_state(log) is False
    replayed = replay(log)
    assert replayed["sha256"][7] != _seen["pcr7"]
    assert replayed["sha256"] == {
        pcr: value
        for pcr, value in _guest_pcrs(host, "sha256").items()
        if pcr in replayed["sha256"]
    }


def test_a_replaced_tpm_has_another_ek_and_pcrs_readable_from_outside(vm_lab: Path) -> None:
    host = vm.replace_tpm(vm_lab, NAME)
    assert host.tpm_generation == 2
    ek = _ek(host)
    assert ek != _seen["ek"]
    _seen["ek"] = ek
    _seen["srk"] = _srk(host)
    guest = _guest_pcrs(host, "sha256")
    vm.stop(vm_lab, NAME, hard=True)  # QEMU killed, the TPM (and its PCRs) kept
    assert vm.read_pcrs(vm_lab, NAME, "sha256") == guest
    assert guest[0] != bytes(32)  # the firmware did measure


def test_a_cleared_tpm_keeps_its_ek_but_not_its_storage_key(vm_lab: Path) -> None:
    host = vm.clear_tpm(vm_lab, NAME)
    assert _ek(host) == _seen["ek"]
    assert _srk(host) != _seen["srk"]


def test_grub_linux_with_secure_boot_off_leaves_no_event_log(vm_lab: Path) -> None:
    """Also: the emergency target gives a root shell on the serial console."""
    host = vm.reboot(
        vm_lab, NAME, linuxefi=False, cmdline="systemd.unit=emergency.target", wait=False
    )
    assert not host.linuxefi and not host.secure_boot
    vm.enter_emergency_shell(host)
    assert vm.console_run(host, "id -u") == (0, "0")
    assert vm.console_run(host, f"test -e {EVENT_LOG}")[0] == 1
    assert vm.console_run(host, "test -c /dev/tpmrm0")[0] == 0  # a TPM, but no log of the boot
    vm.stop(vm_lab, NAME)  # no SSH there: the power-off is typed at the shell
    assert not vm.load(vm_lab, NAME).running
    # the disk as a thief would read it: what the guest wrote is there
    raw = vm.raw_disk(vm_lab, NAME, vm_lab / "disk.raw")
    with open(raw, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as disk:
        assert disk.find(_seen["marker"]) != -1
    raw.unlink()
