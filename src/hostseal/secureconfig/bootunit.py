"""Boot integration: the systemd units that restore the configuration at boot and save it back.

``hostseal config install-boot-unit`` writes and enables the units of :func:`unit_files`:

* ``hostseal-unlock.service`` runs ``hostseal config unlock --mount --to /run/hostseal/config``
  early at boot, after the local file systems and the TPM and before sshd, libvirtd and the
  network: the configuration is restored into ``/run`` (a tmpfs: the plaintext never touches a
  disk) and every adopted path is bind-mounted over its empty placeholder. On a security
  violation ``hostseal`` exits with code 3, the unit fails, and ``OnFailure=emergency.target``
  stops the boot in the emergency shell; the message goes to the console, its first line
  ESXi's: "Unable to restore the system configuration. A security violation was detected.",
  then what changed and the recovery-key remedy. Its ``ExecStop`` is the shutdown auto-backup:
  the unit is stopped after sshd and libvirtd (it is ordered before them) and before the local
  file systems and the TPM go away (it is ordered after them), while ``/run`` and the mounts are
  still there.
* ``hostseal-autobackup.service`` runs ``hostseal config autobackup``: the live copies are
  sealed again when they changed (nothing happens, and no TPM is used, when they did not).
* ``hostseal-autobackup.timer`` starts it every hour, as ESXi's auto-backup.

Edge: :func:`install` writes and enables the units; :func:`unit_files` only builds their text.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hostseal import systemd
from hostseal.fsutil import atomic_write

UNIT_NAME = "hostseal-unlock.service"
AUTOBACKUP_SERVICE = "hostseal-autobackup.service"
AUTOBACKUP_TIMER = "hostseal-autobackup.timer"
RUNTIME_CONFIG = Path("/run/hostseal/config")
SERVICES_AFTER = "ssh.service sshd.service libvirtd.service network-pre.target"
"""What the restore must precede: the services that read adopted paths, and the network."""


def _config_command(hostseal: str, bootbank: Path, tcti: str | None, *args: str) -> str:
    """``tcti`` None: no --tcti, so /etc/hostseal/hostseal.toml (or the default) decides."""
    tpm = ["--tcti", tcti] if tcti is not None else []
    return shlex.join([hostseal, *tpm, "config", "--bootbank", str(bootbank), *args])


def unit_text(
    hostseal: str, bootbank: Path, tcti: str | None, target: Path = RUNTIME_CONFIG
) -> str:
    """``hostseal-unlock.service``."""
    start = _config_command(hostseal, bootbank, tcti, "unlock", "--mount", "--to", str(target))
    stop = _config_command(hostseal, bootbank, tcti, "autobackup", "--live", str(target))
    return f"""[Unit]
Description=hostseal: restore the sealed host configuration and mount the adopted paths
DefaultDependencies=no
After=local-fs.target tpm2.target systemd-tmpfiles-setup.service
Wants=tpm2.target network-pre.target
Before=sysinit.target shutdown.target {SERVICES_AFTER}
Conflicts=shutdown.target
ConditionPathExists={bootbank}/state.tgz
OnFailure=emergency.target
OnFailureJobMode=replace-irreversibly

[Service]
Type=oneshot
RemainAfterExit=yes
# /run is a tmpfs: the decrypted configuration stays in memory. /run/hostseal (0700) stays
# while the unit is stopped, because the adopted paths stay mounted from it.
RuntimeDirectory=hostseal
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
ExecStart={start}
# The shutdown auto-backup: sshd and libvirtd have stopped, /run and the mounts are still there.
ExecStop={stop}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=sysinit.target
"""


def autobackup_service_text(
    hostseal: str, bootbank: Path, tcti: str | None, target: Path = RUNTIME_CONFIG
) -> str:
    """``hostseal-autobackup.service``: seal the live copies again if they changed."""
    command = _config_command(hostseal, bootbank, tcti, "autobackup", "--live", str(target))
    return f"""[Unit]
Description=hostseal: save changes of the adopted paths into the sealed configuration
After={UNIT_NAME}
Requisite={UNIT_NAME}
ConditionPathExists={target}/.hostseal-adopted/manifest.json

[Service]
Type=oneshot
ExecStart={command}
"""


def autobackup_timer_text() -> str:
    """``hostseal-autobackup.timer``: hourly, as ESXi's auto-backup."""
    return f"""[Unit]
Description=hostseal: hourly auto-backup of the adopted paths

[Timer]
OnCalendar=hourly
AccuracySec=1min
Unit={AUTOBACKUP_SERVICE}

[Install]
WantedBy=timers.target
"""


def unit_files(hostseal: str, bootbank: Path, tcti: str | None) -> dict[str, str]:
    """Every unit file, name to text: unlock, auto-backup service and timer. ``hostseal`` is
    the installed binary (the Debian package gives ``/usr/bin/hostseal``). ``tcti`` None: the
    units name no TPM and the configuration file decides (the package's units); the bootbank
    is always named, as the unlock unit's start condition needs its path."""
    return {
        UNIT_NAME: unit_text(hostseal, bootbank, tcti),
        AUTOBACKUP_SERVICE: autobackup_service_text(hostseal, bootbank, tcti),
        AUTOBACKUP_TIMER: autobackup_timer_text(),
    }


WANTED_BY = {UNIT_NAME: "sysinit.target", AUTOBACKUP_TIMER: "timers.target"}
"""The units enabled, and the target that wants each (the service is started by the timer)."""


def install(root: Path, hostseal: str, bootbank: Path, tcti: str) -> list[Path]:
    """Write every unit under ``root`` (``/`` on a host), enable the unlock unit and the timer;
    return what was written."""
    written: list[Path] = []
    for name, text in unit_files(hostseal, bootbank, tcti).items():
        if name in WANTED_BY:
            written += systemd.install(root, name, text, WANTED_BY[name])
        else:
            path = root / "etc/systemd/system" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text.encode(), mode=0o644)
            written.append(path)
    return written
