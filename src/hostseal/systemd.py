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


def agent_unit(
    hostseal: str, server: str | None, ca: Path | None, interval: int | None = 300
) -> str:
    """The agent's unit. A value given ``None`` is left off the command line, so that the agent
    takes it from /etc/hostseal/hostseal.toml (the Debian package's unit gives none)."""
    command = shlex.join(
        [
            hostseal,
            "agent",
            "run",
            *_flag("--server", server),
            *_flag("--ca", ca),
            *_flag("--interval", interval),
        ]
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


def server_unit(hostseal: str, data_dir: Path, bind: str | None) -> str:
    """The service's unit; ``bind=None`` leaves the address to the configuration file. The data
    directory is always named: the unit's sandbox lets the service write only there."""
    command = shlex.join(
        [hostseal, "server", "run", "--data-dir", str(data_dir), *_flag("--bind", bind)]
    )
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


def _flag(name: str, value: object | None) -> list[str]:
    return [] if value is None else [name, str(value)]


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
