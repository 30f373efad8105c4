"""The processes of a real-firmware lab host: swtpm (its TPM, on a unix control socket) and a
new QEMU per boot (TCG, OVMF with Secure Boot, ``-no-reboot``, daemonized), QEMU's QMP socket,
and the host tools they need."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from hostseal import swtpmproc
from hostseal.errors import HostsealError
from hostseal.lab import tpmctrl
from hostseal.lab.vmhost import VmError, VmHost, qemu_pid

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
#: The address in the guest at which the optional forwarded service answers.
GUEST_SERVICE_ADDRESS = "10.0.2.100"
RELAY = Path(__file__).with_name("_relay.py")


# -- the tools this needs --------------------------------------------------------------------


def missing_tools() -> list[str]:
    """What this machine lacks to run VM hosts (empty: nothing), as Debian package names."""
    missing = []
    for tool, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("swtpm", "swtpm"),
        ("swtpm_setup", "swtpm-tools"),
        ("ssh", "openssh-client"),
        ("mcopy", "mtools"),
    ):
        if shutil.which(tool) is None:
            missing.append(package)
    if not OVMF_CODE.is_file() or not OVMF_VARS_MS.is_file():
        missing.append("ovmf")
    return missing


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise VmError(
            f"Real-firmware lab hosts need {', '.join(missing)}, which this machine lacks.",
            f"Install: sudo apt-get install {' '.join(missing)} (or run ./scripts/setup).",
        )


# -- processes -------------------------------------------------------------------------------


def swtpm_pid(host: VmHost) -> int | None:
    return swtpmproc.pid_of(host.path / "swtpm.pid", host.tpm_dir)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not swtpmproc.alive(pid):
            return True
        time.sleep(0.1)
    return not swtpmproc.alive(pid)


def manufacture_tpm(host: VmHost) -> None:
    """A new TPM: fresh swtpm state (new seeds, new EK) with the host's PCR banks."""
    if host.tpm_dir.exists():
        shutil.rmtree(host.tpm_dir)
    host.tpm_dir.mkdir(parents=True, mode=0o700)
    result = subprocess.run(
        [
            swtpmproc.require("swtpm_setup", "lab hosts"),
            "--tpm2",
            "--tpmstate",
            str(host.tpm_dir),
            "--pcr-banks",
            ",".join(host.banks),
            "--overwrite",
            "--logfile",
            str(host.path / "swtpm_setup.log"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise VmError(
            f"swtpm_setup failed for lab host {host.name!r}.",
            f"See {host.path / 'swtpm_setup.log'}.",
        )


def launch_swtpm(host: VmHost) -> None:
    """swtpm serving the host's TPM state on a unix control socket (QEMU's ``emulator``)."""
    stop_swtpm(host)
    host.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
    host.swtpm_socket.unlink(missing_ok=True)
    pidfile = host.path / "swtpm.pid"
    result = subprocess.run(
        [
            swtpmproc.require("swtpm", "lab hosts"),
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={host.tpm_dir.resolve()}",
            "--ctrl",
            f"type=unixio,path={host.swtpm_socket}",
            "--pid",
            f"file={pidfile.resolve()}",
            "--log",
            f"file={(host.path / 'swtpm.log').resolve()},level=1",
            "--daemon",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    deadline = time.monotonic() + 5
    while result.returncode == 0 and time.monotonic() < deadline:
        if host.swtpm_socket.exists() and swtpm_pid(host) is not None:
            return
        time.sleep(0.02)
    raise VmError(
        f"swtpm did not start for lab host {host.name!r}: "
        f"{(result.stderr or result.stdout).strip()[-400:] or 'no socket'}",
        f"See {host.path / 'swtpm.log'}.",
    )


def stop_swtpm(host: VmHost) -> None:
    """Stop the host's swtpm if it runs: TPM2_Shutdown first, so the TPM stops in order."""
    pid = swtpm_pid(host)
    if pid is None:
        return
    with (
        contextlib.suppress(HostsealError, OSError),
        tpmctrl.channel(host.swtpm_socket, timeout=3) as ch,
    ):
        tpmctrl.shutdown_and_stop(ch)
    if not wait_gone(pid, 3):
        swtpmproc.kill(pid)


def _qemu_command(host: VmHost) -> list[str]:
    nic = f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{host.ssh_port}-:22"
    if host.guest_port is not None:
        relay = f"{sys.executable} -I -S {RELAY} {host.guest_port}"
        nic += f",guestfwd=tcp:{GUEST_SERVICE_ADDRESS}:{host.guest_port}-cmd:{relay}"
    return [
        "qemu-system-x86_64",
        "-name",
        f"hostseal-lab-{host.name}",
        "-accel",
        "tcg",
        "-machine",
        "q35,smm=on",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-global",
        "ICH9-LPC.disable_s3=1",
        "-m",
        str(host.memory_mib),
        "-smp",
        str(host.cpus),
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={host.vars.resolve()}",
        "-drive",
        f"if=none,id=disk0,format=qcow2,file={host.disk.resolve()}",
        "-device",
        "virtio-blk-pci,drive=disk0",
        "-chardev",
        f"socket,id=chrtpm,path={host.swtpm_socket}",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-crb,tpmdev=tpm0",
        "-nic",
        nic,
        "-chardev",
        f"socket,id=ser0,path={host.serial_socket},server=on,wait=off,"
        f"logfile={host.console_log.resolve()},logappend=on",
        "-serial",
        "chardev:ser0",
        "-qmp",
        f"unix:{host.qmp_socket},server=on,wait=off",
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-daemonize",
        "-pidfile",
        str((host.path / "qemu.pid").resolve()),
    ]


def _launch_qemu(host: VmHost) -> None:
    for sock in (host.serial_socket, host.qmp_socket):
        sock.unlink(missing_ok=True)
    with open(host.path / "qemu.log", "ab") as log:
        log.write(f"--- boot {host.boots + 1}\n".encode())
        log.flush()
        result = subprocess.run(
            _qemu_command(host), stdout=log, stderr=log, stdin=subprocess.DEVNULL, check=False
        )
    if result.returncode != 0 or qemu_pid(host) is None:
        raise VmError(
            f"QEMU did not start for lab host {host.name!r} (exit code {result.returncode}).",
            f"See {host.path / 'qemu.log'}.",
        )


def power_on(host: VmHost) -> None:
    """A cold boot: swtpm, then a new QEMU process; the console of this boot starts here."""
    if not host.ssh_port or not _port_free(host.ssh_port):
        host.ssh_port = _free_port()
    host.console_offset = host.console_log.stat().st_size if host.console_log.exists() else 0
    launch_swtpm(host)
    try:
        _launch_qemu(host)
    except BaseException:
        stop_swtpm(host)
        raise
    host.boots += 1
    host.save()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- QMP (QEMU's control socket) -------------------------------------------------------------


def qmp(host: VmHost, command: str, timeout: float = 5.0) -> None:
    """Run one QMP command (``system_powerdown``, ``quit``); errors are ignored."""
    with contextlib.suppress(OSError, ValueError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(host.qmp_socket))
        f = s.makefile("rwb")
        f.readline()  # the greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            f.readline()
