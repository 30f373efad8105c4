"""Tokens never travel over plain HTTP (issue 12, item 11).

Every HTTP client of hostseal that carries a token -- the REST client behind ``hostseal
host|alarm|policy|escrow``, the agent (its enrolment receives a token, its attestations send
one) and the key provider's attestation-gated release -- refuses an ``http://`` server before it
opens a connection. The one exception is development against this machine: a loopback address
with ``--allow-plain-http-loopback`` (or ``HOSTSEAL_ALLOW_PLAIN_HTTP=loopback``).

The proof that nothing is sent is a real TCP listener on 127.0.0.1 that records every byte it
receives; the loopback exception is shown against a real plain-HTTP listener.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _service import hostseal
from hostseal.agent import Agent, AgentConfig
from hostseal.client.http import Client
from hostseal.client.transport import (
    ALLOW_PLAIN_HTTP_ENV,
    BadServerUrl,
    PlainHttpRefused,
    check_server_url,
)
from hostseal.errors import HostsealError
from hostseal.keyprovider import HttpVerdictSource, KeyReleaseRefused, ProviderStore
from hostseal.lab import LabHost

TOKEN = "hst_secret-token-never-in-clear"


@dataclass
class Listener:
    """A plain TCP listener recording what it receives; with ``answers`` it speaks HTTP/1.1
    (path -> JSON body), otherwise it only reads."""

    answers: dict[str, object] | None = None
    received: list[bytes] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"

    @property
    def data(self) -> bytes:
        return b"".join(self.received)

    def url(self, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}"

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                chunk = b""
                with contextlib.suppress(OSError):
                    chunk = conn.recv(65536)
                self.received.append(chunk)
                if self.answers is None or not chunk:
                    continue
                path = chunk.split(b" ", 2)[1].decode().split("?")[0] if b" " in chunk else ""
                body = json.dumps(self.answers.get(path, {"error": "NotFound"})).encode()
                status = b"200 OK" if path in self.answers else b"404 Not Found"
                with contextlib.suppress(OSError):
                    conn.sendall(
                        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                        b"Connection: close\r\n\r\n" + body
                    )


@contextlib.contextmanager
def listening(
    answers: dict[str, object] | None = None, bind: str = "127.0.0.1"
) -> Iterator[Listener]:
    listener = Listener(answers, host=bind)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((bind, 0))
    server.listen(8)
    listener.port = server.getsockname()[1]
    thread = threading.Thread(target=listener._serve, args=(server,), daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_env_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PLAIN_HTTP_ENV, raising=False)


def _own_non_loopback_address() -> str | None:
    """This machine's address on its default route (not loopback), when it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent by a UDP connect
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


# --- the check itself: one table -------------------------------------------------------------

REFUSED_WITHOUT_FLAG = [
    "http://127.0.0.1:8443",
    "http://localhost:8443",
    "http://[::1]:8443",
    "http://attest.example:8443",
    "HTTP://attest.example",
]


@pytest.mark.parametrize("url", REFUSED_WITHOUT_FLAG)
def test_plain_http_is_refused_without_the_flag(url: str) -> None:
    with pytest.raises(PlainHttpRefused) as err:
        check_server_url(url)
    assert err.value.message.startswith(f"Refusing to send a token to {url} over plain HTTP")
    assert "anyone on the network path can read it" in err.value.message
    assert "Use the server's https:// URL" in err.value.remedy
    assert "--ca" in err.value.remedy


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8443",
        "http://127.1.2.3",
        "http://localhost:8443",
        "http://LOCALHOST",
        "http://[::1]:8443/",
    ],
)
def test_loopback_with_the_flag_is_allowed(url: str) -> None:
    assert check_server_url(url, allow_plain_http_loopback=True) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8443",
        "http://attest.example:8443",
        "http://localhost.attacker.example",
        "http://127.0.0.1.nip.io",
        "http://[::ffff:127.0.0.1]:8443",
        "http://0.0.0.0:8443",
    ],
)
def test_non_loopback_is_refused_even_with_the_flag(url: str) -> None:
    with pytest.raises(PlainHttpRefused) as err:
        check_server_url(url, allow_plain_http_loopback=True)
    assert "plain HTTP is allowed only to a loopback address" in err.value.message
    assert "127.0.0.0/8, ::1 or localhost" in err.value.message


def test_env_allows_loopback_only_and_only_with_its_one_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ALLOW_PLAIN_HTTP_ENV, "loopback")
    assert check_server_url("http://127.0.0.1:1") == "http://127.0.0.1:1"
    with pytest.raises(PlainHttpRefused):
        check_server_url("http://192.0.2.7:1")
    monkeypatch.setenv(ALLOW_PLAIN_HTTP_ENV, "yes")
    with pytest.raises(BadServerUrl) as err:
        check_server_url("http://127.0.0.1:1")
    assert err.value.message == (
        "HOSTSEAL_ALLOW_PLAIN_HTTP is 'yes'; the only value it accepts is 'loopback'."
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "attest.example:8443",
            "The server address 'attest.example:8443' has no scheme (https://)",
        ),
        ("127.0.0.1:8443", "The server address '127.0.0.1:8443' has no scheme (https://)"),
        ("attest.example", "The server address 'attest.example' has no scheme (https://)"),
        ("", "The server address '' has no scheme (https://)"),
        ("ftp://attest.example", "The server URL 'ftp://attest.example' uses ftp://"),
        ("https://", "The server URL 'https://' names no host"),
        ("https://alice:pw@attest.example", "The server URL contains a user name or password"),
    ],
)
def test_malformed_server_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(BadServerUrl) as err:
        check_server_url(url)
    assert err.value.message.startswith(message)
    assert err.value.remedy


def test_https_passes() -> None:
    assert check_server_url("https://attest.example:8443/") == "https://attest.example:8443"


# --- every client path: refused before any byte is sent ---------------------------------------


def test_rest_client_refuses_before_connecting() -> None:
    with listening() as listener, pytest.raises(PlainHttpRefused):
        Client(listener.url(), TOKEN, True)
    assert listener.received == []


def test_cli_refuses_plain_http_and_sends_nothing() -> None:
    with listening() as listener:
        run = hostseal("host", "list", "--server", listener.url(), env={"HOSTSEAL_TOKEN": TOKEN})
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"Refusing to send a token to {listener.url()} over plain HTTP" in run.stderr
    assert "Traceback" not in run.stderr
    assert listener.received == []


def test_cli_refuses_a_scheme_less_server() -> None:
    run = hostseal("host", "list", "--server", "attest.example:8443", env={"HOSTSEAL_TOKEN": TOKEN})
    assert run.returncode == 1
    assert "The server address 'attest.example:8443' has no scheme (https://)" in run.stderr
    assert "https://attest.example:8443" in run.stderr


@pytest.mark.swtpm
def test_agent_refuses_plain_http_before_enrolling(lab_host: LabHost, tmp_path: Path) -> None:
    with listening() as listener:
        agent_config = AgentConfig(
            name="host1",
            server=listener.url(),
            ca=None,
            tcti=lab_host.tcti,
            eventlog=lab_host.eventlog,
            bootbank=tmp_path / "bootbank",
            state_dir=tmp_path / "agent",
        )
        with pytest.raises(PlainHttpRefused):
            Agent(agent_config).attest_once()
        run = hostseal(
            "agent", "run", "--once", "--server", listener.url(),
            "--state-dir", str(tmp_path / "agent"), "--name", "host1",
            env={"HOSTSEAL_TCTI": lab_host.tcti},
        )  # fmt: skip
    assert run.returncode == 1
    assert f"Refusing to send a token to {listener.url()} over plain HTTP" in run.stderr
    assert listener.received == []


def test_key_release_refuses_plain_http_and_sends_no_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    with listening() as listener:
        source = HttpVerdictSource(listener.url(), token)
        with pytest.raises(KeyReleaseRefused) as err:
            source.verdict("host1")
    assert err.value.message.startswith(f"Refusing to send a token to {listener.url()}")
    assert "no vTPM key is released" in err.value.message
    assert listener.received == []


def test_require_attestation_refuses_a_plain_http_server(tmp_path: Path) -> None:
    run = hostseal(
        "keyprovider", "require-attestation", "--host", "host1",
        "--server", "http://attest.example:8443", "--token-file", str(tmp_path / "token"),
        env={"HOSTSEAL_KEYPROVIDER_DIR": str(tmp_path / "kp")},
    )  # fmt: skip
    assert run.returncode == 1
    assert "Refusing to send a token to http://attest.example:8443 over plain HTTP" in run.stderr
    assert not (tmp_path / "kp" / "release.json").exists()


def test_agent_unit_refuses_a_plain_http_server(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    run = hostseal(
        "agent", "install-unit", "--server", "http://127.0.0.1:8443", "--ca", str(ca),
        "--root", str(tmp_path / "root"),
    )  # fmt: skip
    assert run.returncode == 1
    assert "over plain HTTP" in run.stderr
    assert not (tmp_path / "root").exists()


# --- the development exception, against a real plain-HTTP listener ---------------------------


def test_cli_with_the_flag_reaches_a_loopback_listener() -> None:
    with listening({"/v1/hosts": []}) as listener:
        run = hostseal(
            "host", "list", "--json", "--server", listener.url(), "--allow-plain-http-loopback",
            env={"HOSTSEAL_TOKEN": TOKEN},
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []
    assert b"GET /v1/hosts" in listener.data
    assert f"Bearer {TOKEN}".encode() in listener.data


def test_env_allowance_reaches_a_loopback_listener_for_key_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    monkeypatch.setenv(ALLOW_PLAIN_HTTP_ENV, "loopback")
    answer = {"host": "host1", "status": "passed", "messages": []}
    with listening({"/v1/attest/status": answer}) as listener:
        verdict = HttpVerdictSource(listener.url("localhost"), token).verdict("host1")
    assert verdict.status == "passed"
    assert b"GET /v1/attest/status" in listener.data


def test_require_attestation_keeps_the_loopback_allowance(tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with pytest.raises(PlainHttpRefused):
        store.require_attestation("host1", "http://127.0.0.1:1", token)
    store.require_attestation("host1", "http://127.0.0.1:1", token, allow_plain_http_loopback=True)
    answer = {"host": "host1", "status": "passed", "messages": []}
    with listening({"/v1/attest/status": answer}) as listener:
        store.require_attestation("host1", listener.url(), token, allow_plain_http_loopback=True)
        gate = ProviderStore(tmp_path / "kp").gate()
        assert gate is not None
        gate.release_check()
    assert b"GET /v1/attest/status" in listener.data


@pytest.mark.swtpm
def test_agent_with_the_flag_reaches_a_loopback_listener(lab_host: LabHost, tmp_path: Path) -> None:
    with listening({}) as listener:
        agent = Agent(
            AgentConfig(
                name="host1",
                server=listener.url(),
                ca=None,
                tcti=lab_host.tcti,
                eventlog=lab_host.eventlog,
                bootbank=tmp_path / "bootbank",
                state_dir=tmp_path / "agent",
                allow_plain_http_loopback=True,
            )
        )
        with pytest.raises(HostsealError):  # the listener is not a hostseal server
            agent.attest_once()
    assert b"POST /v1/enrol/start" in listener.data


def test_non_loopback_with_the_flag_is_refused_and_sends_nothing() -> None:
    address = _own_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to listen on")
    with listening(bind="0.0.0.0") as listener:
        url = listener.url(address)
        with pytest.raises(PlainHttpRefused):
            Client(url, TOKEN, True, allow_plain_http_loopback=True)
        run = hostseal(
            "host", "list", "--server", url, "--allow-plain-http-loopback",
            env={"HOSTSEAL_TOKEN": TOKEN},
        )  # fmt: skip
    assert run.returncode == 1
    assert "plain HTTP is allowed only to a loopback address" in run.stderr
    assert listener.received == []
