"""Typed settings with documented defaults.

Precedence, lowest first: built-in default < environment variable < command-line flag. The CLI
builds one :class:`Settings` per invocation with :meth:`Settings.from_env` and overrides fields
from flags; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_EVENTLOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
DEFAULT_BOOTBANK = Path("/var/lib/hostseal/bootbank")
DEFAULT_TPM_CA_DIR = Path("/etc/hostseal/tpm-ca")


def default_lab_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/hostseal-lab`` if set, else ``~/.local/state/hostseal/lab``."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "hostseal-lab"
    return Path.home() / ".local" / "state" / "hostseal" / "lab"


@dataclass(frozen=True)
class Settings:
    """Where hostseal finds the TPM, the event log and its own state.

    ``tcti``      -- ``HOSTSEAL_TCTI`` / ``--tcti``; default ``device:/dev/tpmrm0``.
    ``eventlog``  -- ``HOSTSEAL_EVENTLOG`` / ``--eventlog``; default the kernel's securityfs log.
    ``lab_dir``   -- ``HOSTSEAL_LAB_DIR``; default ``$XDG_RUNTIME_DIR/hostseal-lab`` or
                     ``~/.local/state/hostseal/lab``.
    ``bootbank``  -- ``HOSTSEAL_BOOTBANK`` / ``--bootbank``; default ``/var/lib/hostseal/bootbank``.
    ``tpm_ca_dir``-- ``HOSTSEAL_TPM_CA_DIR``: TPM vendor CA certificates that EK certificates are
                     checked against; default ``/etc/hostseal/tpm-ca`` (empty until you add a
                     vendor bundle: see docs/attestation.md).
    """

    tcti: str = DEFAULT_TCTI
    eventlog: Path = DEFAULT_EVENTLOG
    lab_dir: Path = Path()
    bootbank: Path = DEFAULT_BOOTBANK
    tpm_ca_dir: Path = DEFAULT_TPM_CA_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            tcti=env.get("HOSTSEAL_TCTI") or DEFAULT_TCTI,
            eventlog=Path(env.get("HOSTSEAL_EVENTLOG") or DEFAULT_EVENTLOG),
            lab_dir=Path(env.get("HOSTSEAL_LAB_DIR") or default_lab_dir(env)),
            bootbank=Path(env.get("HOSTSEAL_BOOTBANK") or DEFAULT_BOOTBANK),
            tpm_ca_dir=Path(env.get("HOSTSEAL_TPM_CA_DIR") or DEFAULT_TPM_CA_DIR),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the non-``None`` values of ``changes`` applied (flags over environment)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]
