"""Issue 12, item 10: a bounded OpenAPI-driven fuzz of a real server (schemathesis).

``st run`` generates requests from the server's own OpenAPI document (examples, coverage,
fuzzing and stateful phases) against a real ``hostseal server run`` over TLS, once with each
role's token and once with none. Destructive operations run: the server is a throwaway. Pass
condition: no answer is a 5xx (``not_a_server_error``) and the server's log holds no traceback.

Bounded for CI: a fixed seed, one worker, ``FUZZ_EXAMPLES`` examples per operation, no example
database (each run starts from the same seed, not from earlier failures). The whole module takes
about 70 s on two cores (12 examples: 13-19 s per role, plus the server's start); each run is cut
off at 240 s. The token goes to schemathesis through its configuration file and the
environment, never on its command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _service import Live, live_service

FUZZ_EXAMPLES = int(os.environ.get("HOSTSEAL_FUZZ_EXAMPLES", "12"))
SEED = 20261202
CONFIG = 'headers = { Authorization = "Bearer ${HOSTSEAL_FUZZ_TOKEN}" }\n'


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("fuzz") / "server"
    # enrolment from one address would be rate-limited to 429s: let the fuzz reach the routes
    with live_service(data, {"HOSTSEAL_SERVER_ENROL_PER_MINUTE": "1000000"}) as service:
        yield service


def _fuzz(live: Live, token: str | None, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOSTSEAL_FUZZ_TOKEN": token or ""}
    config = work / "schemathesis.toml"
    config.write_text(CONFIG if token else "")
    st = Path(sys.executable).with_name("st")
    command = [str(st), "--config-file", str(config), "--no-color", "run",
               f"{live.url}/v1/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", str(FUZZ_EXAMPLES), "--seed", str(SEED), "--workers", "1",
               "--generation-database", "none", "--tls-verify", str(live.ca),
               "--request-timeout", "30", "--suppress-health-check", "all"]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=240, check=False, cwd=work
    )


# the most destructive last: an admin run may revoke the other tokens
@pytest.mark.parametrize("role", [None, "viewer", "operator", "admin"], ids=str)
def test_api_fuzz_finds_no_server_error(live: Live, role: str | None, tmp_path: Path) -> None:
    token = getattr(live, role) if role else None
    done = _fuzz(live, token, tmp_path)
    output = done.stdout + done.stderr
    assert token is None or token not in output
    failures = output[output.find("FAILURES") :] if "FAILURES" in output else output[-4000:]
    assert done.returncode == 0, failures[:6000]
    assert "generated" in output  # it did run
    logged = (live.data / "server.log").read_text()
    assert "Traceback" not in logged, logged[-6000:]
