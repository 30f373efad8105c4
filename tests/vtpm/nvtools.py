"""The guest's side of NV storage, through tpm2-tools and the swtpm TCTI."""

from __future__ import annotations

import os
import subprocess

NV_INDEX = "0x1500016"


def _run(tcti: str, *args: str, data: bytes | None = None) -> bytes:
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti, "TSS2_LOG": "all+NONE"}
    result = subprocess.run(list(args), input=data, env=env, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def nv_write(tcti: str, value: bytes) -> None:
    _run(
        tcti,
        "tpm2_nvdefine",
        NV_INDEX,
        "-C",
        "o",
        "-s",
        str(len(value)),
        "-a",
        "ownerread|ownerwrite|authread|authwrite",
    )
    _run(tcti, "tpm2_nvwrite", NV_INDEX, "-C", "o", "-i-", data=value)


def nv_read(tcti: str, size: int) -> bytes:
    return _run(tcti, "tpm2_nvread", NV_INDEX, "-C", "o", "-s", str(size))


def nv_defined(tcti: str) -> bool:
    return NV_INDEX.lower() in _run(tcti, "tpm2_getcap", "handles-nv-index").decode().lower()
