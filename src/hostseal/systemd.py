"""systemd units for hostseal's long-running parts: the agent and the server.

(The boot-time unlock unit lives with the sealed configuration: :mod:`hostseal.secureconfig.
bootunit`.) ``install`` writes a unit under a root directory and enables it for a target.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from hostseal.fsutil import atomic_write

AGENT_UNIT = "hostseal-agent.service"
SERVER_UNIT = "hostseal-server.service"


def agent_unit(hostseal: str, server: str, ca: Path, interval: int = 300) -> str:
    command = shlex.join(
        [hostseal, "agent", "run", "--server", server, "--ca", str(ca), "--interval", str(interval)]
    )
    return f"""[Unit]
Description=hostseal agent: attest this host to the attestation service
Wants=network-online.target
After=network-online.target hostseal-unlock.service tpm2.target

[Service]
Type=simple
ExecStart={command}
Restart=always
RestartSec=10
StateDirectory=hostseal/agent
StateDirectoryMode=0700
Environment=HOSTSEAL_AGENT_DIR=/var/lib/hostseal/agent
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/hostseal

[Install]
WantedBy=multi-user.target
"""


def server_unit(hostseal: str, data_dir: Path, bind: str) -> str:
    command = shlex.join([hostseal, "server", "run", "--data-dir", str(data_dir), "--bind", bind])
    return f"""[Unit]
Description=hostseal attestation service
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={command}
Restart=always
RestartSec=5
DynamicUser=yes
StateDirectory=hostseal/server
StateDirectoryMode=0700
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def install(root: Path, name: str, text: str, wanted_by: str) -> list[Path]:
    """Write ``name`` under ``root``/etc/systemd/system and enable it for ``wanted_by``."""
    units = root / "etc/systemd/system"
    wants = units / f"{wanted_by}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    unit = units / name
    atomic_write(unit, text.encode(), mode=0o644)
    link = wants / name
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(f"../{name}", link)
    return [unit, link]
