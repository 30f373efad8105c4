"""What the agent keeps between runs, in its state directory (mode 0700):

* ``ak.json``     -- the attestation key's public and private areas (the private area is
  encrypted by the TPM: useless outside it), and the EK kind used at enrolment;
* ``token``       -- the agent token the server issued at enrolment (mode 0600);
* ``escrow.json`` -- the recovery IDs and key check values last escrowed (no keys).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hostseal.fsutil import atomic_write

if TYPE_CHECKING:
    from hostseal.tpm.attestation import AkBlob


@dataclass
class AgentState:
    path: Path

    def _ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- attestation key -----------------------------------------------------------------
    def load_ak(self) -> tuple[AkBlob, str] | None:
        from hostseal.tpm.attestation import AkBlob  # loads tpm2_pytss: only when needed

        try:
            record = json.loads((self.path / "ak.json").read_text())
        except FileNotFoundError:
            return None
        blob = AkBlob(base64.b64decode(record["public"]), base64.b64decode(record["private"]))
        return blob, str(record["ek_kind"])

    def save_ak(self, ak: AkBlob, ek_kind: str) -> None:
        self._ensure()
        record = {
            "public": base64.b64encode(ak.public).decode(),
            "private": base64.b64encode(ak.private).decode(),
            "ek_kind": ek_kind,
        }
        atomic_write(self.path / "ak.json", json.dumps(record).encode(), mode=0o600)

    # -- token -------------------------------------------------------------------------------
    def token(self) -> str | None:
        try:
            return (self.path / "token").read_text().strip() or None
        except FileNotFoundError:
            return None

    def save_token(self, token: str) -> None:
        self._ensure()
        atomic_write(self.path / "token", token.encode(), mode=0o600)

    def forget_enrolment(self) -> None:
        for name in ("ak.json", "token", "escrow.json"):
            (self.path / name).unlink(missing_ok=True)

    # -- escrow ------------------------------------------------------------------------------
    def escrowed(self) -> dict[str, str]:
        try:
            data = json.loads((self.path / "escrow.json").read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def save_escrowed(self, kcvs: dict[str, str]) -> None:
        self._ensure()
        atomic_write(self.path / "escrow.json", json.dumps(kcvs).encode(), mode=0o600)


def default_state_dir() -> Path:
    return Path(os.environ.get("HOSTSEAL_AGENT_DIR") or "/var/lib/hostseal/agent")
