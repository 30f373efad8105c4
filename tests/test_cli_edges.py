"""Issue 16, first run and the CLI (no TPM needed): exit codes as the README says, a clear
error instead of a traceback, settings flags before or after the sub-command."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from _service import free_port, hostseal

TCTI_FORMS = (
    "Accepted forms: device:/dev/tpmrm0 (the host's TPM), swtpm:host=127.0.0.1,port=N "
    "(a software TPM), mssim:host=127.0.0.1,port=N."
)


def test_server_run_on_a_busy_port_says_which_port_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = hostseal(
            "server", "run", "--data-dir", str(tmp_path / "data"), "--bind", f"127.0.0.1:{port}"
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"Error: Port {port} on 127.0.0.1 is already in use by another process.\n"
        "What to do: Give another address with --bind HOST:PORT (or HOSTSEAL_SERVER_BIND), or "
        f"stop the process listening on port {port} (ss -ltnp 'sport = :{port}' names it).\n"
    )


@pytest.mark.parametrize(
    "args",
    [("--tcti", "bogus", "tpm", "info"), ("tpm", "info", "--tcti", "bogus")],
    ids=["before", "after"],
)
def test_a_malformed_tcti_is_a_usage_error(args: tuple[str, ...]) -> None:
    done = hostseal(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(
        "Error: Invalid value for '--tcti': Unknown TCTI 'bogus': the part before ':' must be "
        f"one of device, swtpm, mssim. {TCTI_FORMS}\n"
    )
    assert "Known issue" not in done.stderr and "Traceback" not in done.stderr


REMEDY = (
    "What to do: Give a directory the server's user can create and write with --data-dir DIR "
    "(or HOSTSEAL_SERVER_DATA).\n"
)


@pytest.mark.parametrize(
    ("data_dir", "reason"),
    [("/proc/x", "No such file or directory"), ("{file}/sub", "Not a directory")],
    ids=["proc", "under-a-file"],
)
def test_server_run_in_an_unusable_data_directory_is_an_error_not_a_traceback(
    tmp_path: Path, data_dir: str, reason: str
) -> None:
    (tmp_path / "file").write_text("")
    where = data_dir.format(file=tmp_path / "file")
    done = hostseal("server", "run", "--bind", f"127.0.0.1:{free_port()}", "--data-dir", where)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"Error: Cannot use the server's data directory {where}: {reason} ({where}).\n{REMEDY}"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("server", "token", "create", "--role", "admin", "--name", "a"),
        ("server", "token", "list"),
        ("server", "token", "revoke", "a"),
        ("server", "ca-cert"),
    ],
    ids=lambda c: " ".join(c[:3]),
)
def test_a_data_directory_that_is_a_file_is_an_error_not_a_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    data = tmp_path / "file"
    data.write_text("")
    data.chmod(0o600)
    done = hostseal(*command, env={"HOSTSEAL_SERVER_DATA": str(data)})
    assert done.returncode == 1, done.stderr
    first, remedy = done.stderr.split("\n", 1)
    assert first.startswith(
        f"Error: Cannot use the server's data directory {data}: Not a directory ({data}/"
    ), done.stderr
    assert remedy == REMEDY


@pytest.mark.parametrize(
    "args",
    [("config", "--bootbank", "{bb}", "status"), ("config", "status", "--bootbank", "{bb}")],
    ids=["before", "after"],
)
def test_bootbank_works_before_and_after_the_sub_command(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    bootbank = tmp_path / "bootbank"
    done = hostseal(*(a.format(bb=bootbank) for a in args))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"Error: There is no sealed configuration in {bootbank}.\n"
        "What to do: Create one with: hostseal config save --from DIR (or set --bootbank / "
        "HOSTSEAL_BOOTBANK to where it is).\n"
    )


def test_recovery_takes_bootbank_after_the_sub_command(tmp_path: Path) -> None:
    bootbank = tmp_path / "bootbank"
    done = hostseal("recovery", "list", "--reason", "test", "--bootbank", str(bootbank))
    assert "No such option" not in done.stderr
    assert f"There is no sealed configuration in {bootbank}." in done.stderr


def test_global_tcti_is_shown_in_sub_command_help() -> None:
    done = hostseal("tpm", "info", "--help")
    assert done.returncode == 0
    assert "--tcti TCTI" in done.stdout
    assert "--tcti" in hostseal("config", "status", "--help").stdout
    assert "--bootbank" in hostseal("config", "status", "--help").stdout


def test_the_not_enrolled_finding_fits_the_agent_command_only() -> None:
    from hostseal.doctor.knowledge import load_kb
    from hostseal.server.errors import Unauthenticated

    kb = load_kb()
    err = Unauthenticated("Unknown token.", "Check the token.")
    assert (found := kb.for_error(err, "agent")) is not None and found.id == "agent-not-enrolled"
    assert kb.for_error(err, "host") is None
    assert kb.for_error(err) is not None  # doctor's own checks: no command to filter on
