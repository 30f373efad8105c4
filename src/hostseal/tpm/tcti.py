"""TCTI strings: how hostseal names the way to a TPM.

Accepted forms (the same spelling as tpm2-tools' ``TPM2TOOLS_TCTI``):

* ``device:/dev/tpmrm0`` -- a kernel TPM device (the resource manager is preferred);
* ``swtpm:host=127.0.0.1,port=2321`` -- a software TPM (swtpm) on TCP; ``port`` alone is fine;
* ``mssim:host=127.0.0.1,port=2321`` -- the Microsoft/IBM simulator protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hostseal.tpm.errors import TctiInvalid

KNOWN_KINDS = ("device", "swtpm", "mssim")
_REMEDY = (
    "Use device:/dev/tpmrm0 for the host's TPM or swtpm:host=127.0.0.1,port=N for a software "
    "TPM (flag --tcti or HOSTSEAL_TCTI)."
)


@dataclass(frozen=True)
class Tcti:
    """A parsed TCTI string."""

    kind: str
    config: str

    @property
    def is_software(self) -> bool:
        return self.kind in ("swtpm", "mssim")

    @property
    def has_resource_manager(self) -> bool:
        """The kernel's resource manager (/dev/tpmrm*) flushes what a dead client left."""
        return self.kind == "device" and "tpmrm" in self.config

    @property
    def device_path(self) -> Path | None:
        return Path(self.config or "/dev/tpmrm0") if self.kind == "device" else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.config}" if self.config else self.kind


def parse_tcti(text: str) -> Tcti:
    """Parse and check a TCTI string; raise :class:`TctiInvalid` with a remedy when it is wrong."""
    text = text.strip()
    kind, _, config = text.partition(":")
    if kind not in KNOWN_KINDS:
        raise TctiInvalid(
            f"Unknown TCTI {text!r}: the part before ':' must be one of {', '.join(KNOWN_KINDS)}.",
            _REMEDY,
        )
    if kind == "device":
        if config and not config.startswith("/"):
            raise TctiInvalid(f"TCTI {text!r} does not name a device path.", _REMEDY)
        return Tcti(kind, config or "/dev/tpmrm0")
    fields: dict[str, str] = {}
    for part in filter(None, config.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in ("host", "port"):
            raise TctiInvalid(
                f"TCTI {text!r}: {part!r} is not host=ADDRESS or port=NUMBER.", _REMEDY
            )
        fields[key] = value
    port = fields.get("port", "2321")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise TctiInvalid(f"TCTI {text!r}: port {port!r} is not a TCP port number.", _REMEDY)
    host = fields.get("host", "127.0.0.1")
    return Tcti(kind, f"host={host},port={int(port)}")
