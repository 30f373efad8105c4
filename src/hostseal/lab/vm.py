"""Real-firmware lab hosts: a QEMU VM with OVMF, Secure Boot, swtpm and Debian's signed chain.

Beside the simulated hosts of :mod:`hostseal.lab.host` (fast, for most tests), a VM host boots
for real: OVMF (``OVMF_CODE_4M.secboot.fd``) with a copy of ``OVMF_VARS_4M.ms.fd`` (Microsoft
keys enrolled), swtpm as its TPM 2.0 (``tpm-crb``), then shim -> grub -> kernel -> systemd from
the cached disk image of :mod:`hostseal.lab.realimage`. QEMU runs with TCG (this machine's
KVM cannot run firmware) and ``-no-reboot``: every boot is a new QEMU process (a cold boot,
PCRs reset), because a warm reset under emulation is slow and erratic.

Each host lives in ``<lab dir>/<name>/``:

* ``host.json``    -- ``"kind": "vm"``, ports, Secure Boot, loader, command line, counters;
* ``disk.qcow2``   -- an overlay on the cached image (the guest writes only here);
* ``vars.fd``      -- the firmware's variable store (Secure Boot on/off lives here);
* ``tpm/``         -- swtpm's state (a new directory is a new TPM);
* ``console.log``  -- everything the serial console printed, boot after boot;
* ``qemu.pid``, ``swtpm.pid``, ``qemu.log``, ``swtpm.log``.

Sockets (QMP, serial console, swtpm control) sit in a short directory under /tmp, as unix
socket paths are limited to 107 bytes. The lab's SSH key (``<lab dir>/ssh_key``, mode 0600) is
authorized for root through a file on the host's ESP.

Networking is QEMU's user network with ``restrict=on``: the guest reaches nothing but what is
forwarded -- its port 22 from ``127.0.0.1:<ssh_port>``, and optionally ``10.0.2.100:<port>``
in the guest to ``127.0.0.1:<port>`` on this machine (:data:`GUEST_SERVICE_ADDRESS`).

This module holds the operations (:func:`start`, :func:`reboot`, :func:`stop`,
:func:`replace_tpm`, :func:`clear_tpm`, :func:`read_pcrs`, :func:`raw_disk`, :func:`destroy`)
and is the one namespace to import: it re-exports the record (:mod:`hostseal.lab.vmhost`) and
the ways into the guest (:mod:`hostseal.lab.guest`): :func:`run_on`, :func:`read_file`,
:func:`copy_in`, :func:`host_keys`, :func:`console`, :func:`type_line`, :func:`wait_console`,
:func:`wait_ssh`, :func:`enter_emergency_shell`, :func:`console_run`. The processes (swtpm,
QEMU, QMP) are in :mod:`hostseal.lab.vmproc`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from hostseal.lab import realimage, tpmctrl, varstore
from hostseal.lab.guest import (
    BOOT_TIMEOUT,
    EMERGENCY_PROMPT,
    RunResult,
    console,
    console_run,
    console_text,
    copy_in,
    enter_emergency_shell,
    host_keys,
    read_file,
    run_on,
    ssh_args,
    ssh_public_key,
    type_line,
    wait_console,
    wait_ssh,
)
from hostseal.lab.host import _check_name, _locked
from hostseal.lab.vmhost import DEFAULT_BANKS, VmError, VmHost, is_vm, list_hosts, load, qemu_pid
from hostseal.lab.vmproc import (
    GUEST_SERVICE_ADDRESS,
    OVMF_VARS_MS,
    launch_swtpm,
    manufacture_tpm,
    missing_tools,
    power_on,
    qmp,
    require_tools,
    stop_swtpm,
    swtpm_pid,
    wait_gone,
)

__all__ = [
    "BOOT_TIMEOUT",
    "DEFAULT_BANKS",
    "EMERGENCY_PROMPT",
    "GUEST_SERVICE_ADDRESS",
    "RunResult",
    "VmError",
    "VmHost",
    "clear_tpm",
    "console",
    "console_run",
    "console_text",
    "copy_in",
    "destroy",
    "enter_emergency_shell",
    "host_keys",
    "is_vm",
    "list_hosts",
    "load",
    "missing_tools",
    "raw_disk",
    "read_file",
    "read_pcrs",
    "reboot",
    "replace_tpm",
    "run_on",
    "start",
    "stop",
    "type_line",
    "wait_console",
    "wait_ssh",
]


# -- the ESP of the overlay ------------------------------------------------------------------


def _esp_files(host: VmHost) -> dict[str, bytes]:
    grub = realimage.grub_cfg(host.kernel_version, host.cmdline, linuxefi=host.linuxefi)
    return {
        "EFI/debian/grub.cfg": grub.encode(),
        realimage.AUTHORIZED_KEYS_ESP: ssh_public_key(host).encode(),
    }


def _write_esp(host: VmHost) -> None:
    """Write grub.cfg and the lab's SSH key onto the ESP inside the overlay (VM off)."""
    esp = host.path / "esp.tmp"
    mib = realimage.MIB
    _tool(
        [
            "qemu-img",
            "dd",
            "-f",
            "qcow2",
            "-O",
            "raw",
            f"bs={mib}",
            f"skip={realimage.ESP_OFFSET // mib}",
            f"count={realimage.ESP_SIZE // mib}",
            f"if={host.disk}",
            f"of={esp}",
        ]
    )
    try:
        realimage.write_esp_files(esp, _esp_files(host))
        _tool(
            [
                "qemu-io",
                "-f",
                "qcow2",
                "-c",
                f"write -q -s {esp} {realimage.ESP_OFFSET} {realimage.ESP_SIZE}",
                str(host.disk),
            ]
        )
    finally:
        esp.unlink(missing_ok=True)


def _tool(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0 or "error" in result.stdout.lower():
        raise VmError(
            f"{args[0]} failed: {(result.stderr or result.stdout).strip()[-400:]}",
            "Is the host still running? Stop it first.",
        )


# -- operations ------------------------------------------------------------------------------


def start(
    lab_dir: Path,
    name: str,
    *,
    secure_boot: bool | None = None,
    linuxefi: bool | None = None,
    cmdline: str | None = None,
    guest_port: int | None = None,
    banks: tuple[str, ...] = DEFAULT_BANKS,
    cache_dir: Path | None = None,
    wait: bool = True,
    timeout: float = BOOT_TIMEOUT,
) -> VmHost:
    """Create (first time) or power on VM host ``name``; with ``wait``, until SSH answers."""
    _check_name(name)
    require_tools()
    path = lab_dir / name
    if (path / "host.json").is_file() and not is_vm(lab_dir, name):
        raise VmError(
            f"Lab host {name!r} is a simulated host, not a real-firmware one.",
            f"Use another name, or remove it: hostseal lab stop {name} --remove",
        )
    with _locked(path):
        if is_vm(lab_dir, name):
            host = load(lab_dir, name)
            if host.running:
                raise VmError(
                    f"Lab host {name!r} is already running.",
                    f"Use: hostseal lab reboot {name} (or stop it first).",
                )
        else:
            host = _create(path, name, banks, cache_dir)
        _apply(host, secure_boot, linuxefi, cmdline, guest_port)
        power_on(host)
    if wait:
        wait_ssh(host, timeout)
    return host


def _create(path: Path, name: str, banks: tuple[str, ...], cache_dir: Path | None) -> VmHost:
    image = realimage.ensure(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        host = VmHost(
            name=name,
            path=path,
            image=str(image.path),
            kernel_version=image.kernel_version,
            banks=banks,
        )
        _tool(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(image.path),
                "-F",
                "qcow2",
                str(host.disk),
            ]
        )
        shutil.copyfile(OVMF_VARS_MS, host.vars)
        host.vars.chmod(0o600)
        manufacture_tpm(host)
        _write_esp(host)
        host.save()
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return host


def _apply(
    host: VmHost,
    secure_boot: bool | None,
    linuxefi: bool | None,
    cmdline: str | None,
    guest_port: int | None,
) -> None:
    """Change the firmware's Secure Boot setting and grub.cfg while the VM is off."""
    if secure_boot is not None:
        varstore.set_secure_boot(host.vars, secure_boot)
        host.secure_boot = secure_boot
    if guest_port is not None:
        host.guest_port = guest_port
    if (linuxefi is not None and linuxefi != host.linuxefi) or (
        cmdline is not None and cmdline != host.cmdline
    ):
        host.linuxefi = host.linuxefi if linuxefi is None else linuxefi
        host.cmdline = host.cmdline if cmdline is None else cmdline
        _write_esp(host)
    host.save()


def stop(lab_dir: Path, name: str, *, hard: bool = False, timeout: float = 90.0) -> VmHost:
    """Power off. Orderly: the guest shuts down (``systemctl poweroff``, else the ACPI power
    button, else typed at the console), killed only after ``timeout``. ``hard``: QEMU is
    killed at once and swtpm keeps running, so :func:`read_pcrs` sees what the boot measured.
    """
    host = load(lab_dir, name)
    with _locked(host.path):
        _power_off(host, hard=hard, timeout=timeout)
        return host


def _power_off(host: VmHost, *, hard: bool, timeout: float) -> None:
    pid = qemu_pid(host)
    if pid is not None and hard:
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid, 10)
        return
    if pid is not None:
        _ask_to_power_off(host)
        if not wait_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
    stop_swtpm(host)


def _ask_to_power_off(host: VmHost) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        out = subprocess.run(
            [*ssh_args(host, connect_timeout=5), "systemctl poweroff"],
            capture_output=True,
            timeout=15,
            check=False,
        )
        if out.returncode == 0:
            return
    qmp(host, "system_powerdown")
    # an emergency shell ignores the power button; a root shell there takes the command
    with contextlib.suppress(OSError):
        type_line(host, "systemctl poweroff")


def reboot(
    lab_dir: Path,
    name: str,
    *,
    secure_boot: bool | None = None,
    linuxefi: bool | None = None,
    cmdline: str | None = None,
    wait: bool = True,
    timeout: float = BOOT_TIMEOUT,
) -> VmHost:
    """Power off in order, apply the changes (as an operator in the firmware setup and in
    grub.cfg would), and cold-boot a new QEMU on the same disk, variables and TPM."""
    host = load(lab_dir, name)
    with _locked(host.path):
        _power_off(host, hard=False, timeout=90)
        _apply(host, secure_boot, linuxefi, cmdline, None)
        power_on(host)
    if wait:
        wait_ssh(host, timeout)
    return host


def replace_tpm(lab_dir: Path, name: str, *, wait: bool = True) -> VmHost:
    """Swap the TPM (as with a system-board swap): new swtpm state, new EK, then boot."""
    host = load(lab_dir, name)
    with _locked(host.path):
        _power_off(host, hard=False, timeout=90)
        manufacture_tpm(host)
        host.tpm_generation += 1
        power_on(host)
    if wait:
        wait_ssh(host)
    return host


def clear_tpm(lab_dir: Path, name: str, *, wait: bool = True) -> VmHost:
    """TPM2_Clear (as the firmware's "clear TPM" does) while the VM is off, then boot."""
    host = load(lab_dir, name)
    with _locked(host.path):
        _power_off(host, hard=False, timeout=90)
        launch_swtpm(host)
        try:
            with tpmctrl.channel(host.swtpm_socket) as ch:
                tpmctrl.power_on(ch)
                tpmctrl.clear(ch)
                tpmctrl.shutdown_and_stop(ch)
        finally:
            stop_swtpm(host)
        power_on(host)
    if wait:
        wait_ssh(host)
    return host


def read_pcrs(lab_dir: Path, name: str, bank: str = "sha256") -> dict[int, bytes]:
    """PCRs 0-23 of the host's TPM, read from outside: after :func:`stop` with ``hard``."""
    host = load(lab_dir, name)
    if host.running:
        raise VmError(
            f"Lab host {name!r} is running: its TPM belongs to QEMU.",
            f"Stop it first, keeping the PCRs: hostseal lab stop {name} --hard",
        )
    if swtpm_pid(host) is None:
        raise VmError(
            f"Lab host {name!r}'s TPM is not running: the PCRs of its last boot are gone.",
            "Stop the host with --hard (QEMU killed, the TPM kept) to read them.",
        )
    with tpmctrl.channel(host.swtpm_socket) as ch:
        return tpmctrl.pcr_read(ch, bank)


def raw_disk(lab_dir: Path, name: str, target: Path) -> Path:
    """The host's whole disk as a raw image at ``target`` (the VM off): what an attacker who
    takes the disk could read, to scan for plaintext."""
    host = load(lab_dir, name)
    if host.running:
        raise VmError(f"Lab host {name!r} is running.", f"Stop it first: hostseal lab stop {name}")
    _tool(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(host.disk), str(target)])
    return target


def destroy(lab_dir: Path, name: str) -> None:
    """Power off at once and delete the host with its disk and TPM."""
    host = load(lab_dir, name)
    _power_off(host, hard=True, timeout=0)
    stop_swtpm(host)
    shutil.rmtree(host.sockets, ignore_errors=True)
    shutil.rmtree(host.path)
