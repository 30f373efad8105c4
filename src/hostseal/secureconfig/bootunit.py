"""Boot integration: a systemd unit that restores the configuration early at boot.

``hostseal config install-boot-unit`` writes ``hostseal-unlock.service`` and enables it. At boot
it runs ``hostseal config unlock --to /run/hostseal/config`` (``/run`` is a tmpfs, so the
decrypted configuration never touches a disk) before libvirt and the network start. On a security
violation ``hostseal`` exits with code 3, the unit fails, and ``OnFailure=emergency.target``
stops the boot in the emergency shell, where the message (``journalctl -u hostseal-unlock``) says
what changed and how to unlock with a recovery key.

Edge: :func:`install` writes and enables the unit; :func:`unit_text` only builds its text.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hostseal import systemd

UNIT_NAME = "hostseal-unlock.service"
RUNTIME_CONFIG = Path("/run/hostseal/config")


def unit_text(hostseal: str, bootbank: Path, tcti: str, target: Path = RUNTIME_CONFIG) -> str:
    command = shlex.join(
        [
            hostseal,
            "--tcti",
            tcti,
            "config",
            "--bootbank",
            str(bootbank),
            "unlock",
            "--to",
            str(target),
        ]
    )
    return f"""[Unit]
Description=hostseal: restore the sealed host configuration
DefaultDependencies=no
After=local-fs.target tpm2.target systemd-tmpfiles-setup.service
Wants=tpm2.target
Before=sysinit.target network-pre.target libvirtd.service
ConditionPathExists={bootbank}/state.tgz
OnFailure=emergency.target
OnFailureJobMode=replace-irreversibly

[Service]
Type=oneshot
RemainAfterExit=yes
# /run is a tmpfs: the decrypted configuration stays in memory. systemd creates
# /run/hostseal afresh (mode 0700) for each start and removes it at stop.
RuntimeDirectory=hostseal
RuntimeDirectoryMode=0700
ExecStart={command}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=sysinit.target
"""


def install(root: Path, hostseal: str, bootbank: Path, tcti: str) -> list[Path]:
    """Write the unit under ``root`` (``/`` on a host) and enable it; return what was written."""
    return systemd.install(root, UNIT_NAME, unit_text(hostseal, bootbank, tcti), "sysinit.target")
