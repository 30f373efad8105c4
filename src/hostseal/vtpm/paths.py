"""Where vTPMs live.

The vTPM directory is ``HOSTSEAL_VTPM_DIR``; by default ``/var/lib/hostseal/vtpm`` when hostseal
runs as root, else ``$XDG_STATE_HOME/hostseal/vtpm`` (``~/.local/state/hostseal/vtpm``). It is
created with mode 0700 and holds:

* ``vms/<VM>/``    -- one vTPM: ``vtpm.json`` (its record), ``state/`` (swtpm's state, encrypted),
  ``swtpm.sock`` (the control socket QEMU connects to), ``swtpm.pid``, ``run.json``, logs;
* ``ca/``          -- hostseal's vTPM CA (certificate, private key encrypted under a data key);
* ``keyproviders/`` -- the key providers (``HOSTSEAL_KEYPROVIDER_DIR`` overrides it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hostseal.keyprovider.store import default_keyprovider_dir
from hostseal.vtpm.errors import VtpmError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: no trailing newline


def default_vtpm_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    given = env.get("HOSTSEAL_VTPM_DIR")
    if given:
        return Path(given)
    if os.geteuid() == 0:
        return Path("/var/lib/hostseal/vtpm")
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "hostseal" / "vtpm"


def check_vm_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise VtpmError(
            f"{name!r} is not a valid VM name for a vTPM.",
            "Use letters, digits, '.', '_' or '-' (at most 63 characters, starting with a "
            "letter or digit).",
        )


@dataclass(frozen=True)
class VtpmDirs:
    """The directories of one vTPM installation."""

    root: Path
    keyproviders: Path

    def __post_init__(self) -> None:
        # absolute: swtpm's command line (how a running vTPM is recognised) names these paths
        object.__setattr__(self, "root", self.root.absolute())
        object.__setattr__(self, "keyproviders", self.keyproviders.absolute())

    @classmethod
    def at(cls, root: Path, env: Mapping[str, str] | None = None) -> VtpmDirs:
        env = dict(os.environ) if env is None else dict(env)
        return cls(root, default_keyprovider_dir(root, env))

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    def vm(self, name: str) -> Path:
        check_vm_name(name)
        return self.vms / name

    def ensure(self) -> None:
        for path in (self.root, self.vms):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
