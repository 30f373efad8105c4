"""Commands import only what they use (issue 14: under emulation every module costs 20x more).

Each command runs in a fresh interpreter, through ``main()`` as the ``hostseal`` script does;
afterwards the test reads which top-level packages are in ``sys.modules``. ``--version`` and
``--help`` need none of the service, the TPM stack or the HTTP client; ``tpm info`` needs the
TPM stack, never the service or the HTTP client.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hostseal.lab import LabHost

SERVICE = {"fastapi", "uvicorn", "starlette", "sqlalchemy", "alembic", "jinja2"}
CLIENT = {"httpx"}
TPM_STACK = {"tpm2_pytss"}

_RUN = """
import json, sys
from hostseal.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
with open(sys.argv[1], "w") as out:
    json.dump(sorted({name.partition(".")[0] for name in sys.modules}), out)
"""


def loaded_by(tmp_path: Path, *args: str) -> set[str]:
    """The top-level packages imported by ``hostseal ARGS`` in a fresh interpreter."""
    record = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(record), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return set(json.loads(record.read_text()))


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("tpm", "--help")])
def test_version_and_help_load_no_service_tpm_or_http_client(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    loaded = loaded_by(tmp_path, *args)
    assert not loaded & (SERVICE | CLIENT | TPM_STACK), sorted(
        loaded & (SERVICE | CLIENT | TPM_STACK)
    )


@pytest.mark.swtpm
def test_tpm_info_loads_the_tpm_stack_only(tmp_path: Path, lab_host: LabHost) -> None:
    args = ("--tcti", lab_host.tcti, "tpm", "info", "--json", "--eventlog", str(lab_host.eventlog))
    loaded = loaded_by(tmp_path, *args)
    assert "tpm2_pytss" in loaded  # it did talk to the TPM
    assert not loaded & (SERVICE | CLIENT), sorted(loaded & (SERVICE | CLIENT))


def test_the_check_sees_a_heavy_import(tmp_path: Path) -> None:
    """The probe itself works: a command that talks to the service loads the HTTP client."""
    loaded = loaded_by(tmp_path, "host", "list", "--server", "https://127.0.0.1:9", "--json")
    assert "httpx" in loaded
