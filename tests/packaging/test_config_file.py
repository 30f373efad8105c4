"""The configuration file /etc/hostseal/hostseal.toml (HOSTSEAL_CONFIG): flag > environment >
file > built-in default, for the host settings and for command options; a malformed file or an
unknown key is an error that names the file, the line and the key.

Each precedence case runs the real ``hostseal`` entry point (in this process) on a command that
writes what it was given into a unit file, and reads the unit back."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostseal.cli.main import main
from hostseal.settings import DEFAULT_BOOTBANK, DEFAULT_TCTI, Settings, load_config_file

ENV = ("HOSTSEAL_CONFIG", "HOSTSEAL_TCTI", "HOSTSEAL_BOOTBANK", "HOSTSEAL_SERVER")
ENV += ("HOSTSEAL_SERVER_CA", "HOSTSEAL_EVENTLOG", "HOSTSEAL_TPM_CA_DIR", "HOSTSEAL_LAB_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    # the machine's own /etc/hostseal/hostseal.toml must not leak into these tests
    monkeypatch.setenv("HOSTSEAL_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out, err = capsys.readouterr()
    code = stop.value.code
    return (code if isinstance(code, int) else 1), out, err


def config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hostseal.toml"
    path.write_text(text)
    monkeypatch.setenv("HOSTSEAL_CONFIG", str(path))
    return path


# -- the host settings (Settings): shown through the unlock unit's ExecStart ------------------


def unlock_command(root: Path) -> str:
    text = (root / "etc/systemd/system/hostseal-unlock.service").read_text()
    return next(line for line in text.splitlines() if line.startswith("ExecStart="))


FILE_SETTINGS = 'tcti = "swtpm:host=127.0.0.1,port=2321"\nbootbank = "/srv/file-bank"\n'


@pytest.mark.parametrize(
    ("file", "env", "flags", "tcti", "bootbank"),
    [
        ("", {}, (), DEFAULT_TCTI, str(DEFAULT_BOOTBANK)),
        (FILE_SETTINGS, {}, (), "swtpm:host=127.0.0.1,port=2321", "/srv/file-bank"),
        (
            FILE_SETTINGS,
            {"HOSTSEAL_TCTI": "swtpm:host=127.0.0.1,port=9999", "HOSTSEAL_BOOTBANK": "/srv/env"},
            (),
            "swtpm:host=127.0.0.1,port=9999",
            "/srv/env",
        ),
        (
            FILE_SETTINGS,
            {"HOSTSEAL_TCTI": "swtpm:host=127.0.0.1,port=9999", "HOSTSEAL_BOOTBANK": "/srv/env"},
            ("--tcti", "mssim:host=127.0.0.1,port=7", "--bootbank", "/srv/flag"),
            "mssim:host=127.0.0.1,port=7",
            "/srv/flag",
        ),
    ],
    ids=["default", "file", "env-over-file", "flag-over-env"],
)
def test_host_settings_flag_over_env_over_file_over_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    file: str,
    env: dict[str, str],
    flags: tuple[str, ...],
    tcti: str,
    bootbank: str,
) -> None:
    config(tmp_path, file, monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "root"
    code, _, err = run("config", "install-boot-unit", "--root", str(root), *flags, capsys=capsys)
    assert code == 0, err
    command = unlock_command(root)
    assert f" --tcti {tcti} " in command
    assert f" --bootbank {bootbank} " in command


def test_every_host_setting_is_read_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hostseal.toml"
    path.write_text(
        'tcti = "swtpm:host=127.0.0.1,port=1"\neventlog = "/srv/log.bin"\n'
        'bootbank = "/srv/bank"\ntpm-ca-dir = "/srv/ca"\nlab-dir = "/srv/lab"\n'
    )
    loaded = load_config_file({"HOSTSEAL_CONFIG": str(path)})
    settings = Settings.from_env({}, loaded)
    assert settings == Settings(
        tcti="swtpm:host=127.0.0.1,port=1",
        eventlog=Path("/srv/log.bin"),
        bootbank=Path("/srv/bank"),
        tpm_ca_dir=Path("/srv/ca"),
        lab_dir=Path("/srv/lab"),
    )
    from_env = Settings.from_env({"HOSTSEAL_LAB_DIR": "/env/lab"}, loaded)
    assert from_env.lab_dir == Path("/env/lab")
    assert from_env.tpm_ca_dir == Path("/srv/ca")


# -- a command option: agent install-unit's --server (has HOSTSEAL_SERVER) and --interval ------


def agent_command(root: Path) -> str:
    text = (root / "etc/systemd/system/hostseal-agent.service").read_text()
    return next(line for line in text.splitlines() if line.startswith("ExecStart="))


FILE_AGENT = (
    '[agent.install-unit]\nserver = "https://file.example:8443"\nca = "/etc/file-ca.pem"\n'
    "interval = 60\n"
)


@pytest.mark.parametrize(
    ("file", "env", "flags", "expected"),
    [
        (
            "",
            {"HOSTSEAL_SERVER_CA": "/ca.pem", "HOSTSEAL_SERVER": "https://env.example:8443"},
            (),
            "--server https://env.example:8443 --ca /ca.pem --interval 300",
        ),
        (
            FILE_AGENT,
            {},
            (),
            "--server https://file.example:8443 --ca /etc/file-ca.pem --interval 60",
        ),
        (
            FILE_AGENT,
            {"HOSTSEAL_SERVER": "https://env.example:8443"},
            (),
            "--server https://env.example:8443 --ca /etc/file-ca.pem --interval 60",
        ),
        (
            FILE_AGENT,
            {"HOSTSEAL_SERVER": "https://env.example:8443"},
            ("--server", "https://flag.example:8443", "--interval", "5"),
            "--server https://flag.example:8443 --ca /etc/file-ca.pem --interval 5",
        ),
    ],
    ids=["default-and-env", "file", "env-over-file", "flag-over-env"],
)
def test_command_option_flag_over_env_over_file_over_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    file: str,
    env: dict[str, str],
    flags: tuple[str, ...],
    expected: str,
) -> None:
    config(tmp_path, file, monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "root"
    code, _, err = run("agent", "install-unit", "--root", str(root), *flags, capsys=capsys)
    assert code == 0, err
    assert agent_command(root).endswith(f" agent run {expected}")


def test_an_env_var_of_an_option_click_does_not_read_still_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """server run's --data-dir is read from HOSTSEAL_SERVER_DATA by the server's settings, not
    by click: the file's value must not reach the option when the variable is set."""
    from hostseal.cli._filedefaults import default_map

    path = config(
        tmp_path, '[server.run]\ndata-dir = "/srv/file"\nbind = "0.0.0.0:9"\n', monkeypatch
    )
    loaded = load_config_file({"HOSTSEAL_CONFIG": str(path)})
    assert default_map(loaded, {}) == {
        "server": {"run": {"data_dir": "/srv/file", "bind": "0.0.0.0:9"}}
    }
    assert default_map(loaded, {"HOSTSEAL_SERVER_DATA": "/srv/env"}) == {
        "server": {"run": {"bind": "0.0.0.0:9"}}
    }


# -- errors: each names the file, the line and what to do -------------------------------------


def test_a_missing_default_file_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HOSTSEAL_CONFIG")
    loaded = load_config_file({}, default=tmp_path / "absent.toml")
    assert loaded.path is None and loaded.host == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'tcti = "device:/dev/tpmrm0"\nbootbank = /var/lib\n',
            "{path} is not valid TOML: Invalid value (at line 2, column 12).",
        ),
        (
            'tcti = "device:/dev/tpmrm0"\ntpm_ca_dir = "/x"\n',
            "{path} line 2: unknown key 'tpm_ca_dir' at the top. Host settings: tcti, "
            "eventlog, bootbank, tpm-ca-dir, lab-dir; command options go in a table such as "
            "[agent.run].",
        ),
        (
            "\n[agent.run]\nserver = 'https://a:1'\nintervall = 5\n",
            "{path} line 4: unknown key 'intervall' in [agent.run]. It may set: server, ca, "
            "interval, name, state-dir, escrow, enrolment-token-file.",
        ),
        (
            "[agent]\nserver = 'https://a:1'\n",
            "{path} line 2: unknown key 'server' in [agent]. It may set: nothing (its "
            "sub-commands may: [agent.run], [agent.install-unit]).",
        ),
        (
            "[agnet.run]\nserver = 'https://a:1'\n",
            "{path} line 1: [agnet] is not a hostseal command that takes options from this "
            "file. Tables: [agent.run], [agent.install-unit], [server.run], "
            "[server.install-unit].",
        ),
        ("bootbank = 5\n", "{path} line 1: bootbank must be a string (a path or TCTI in quotes)."),
        (
            "[agent.run]\nserver = 'https://a:1'\ninterval = 'x'\n",
            "{path} line 3: interval in [agent.run] must be a number, not 'x'.",
        ),
        (
            "[server.run]\nek-policy = 'trust-all'\n",
            "{path} line 2: ek-policy in [server.run] must be one of approve, require-chain, "
            "not 'trust-all'.",
        ),
    ],
    ids=[
        "malformed",
        "unknown-top",
        "unknown-option",
        "option-on-group",
        "unknown-table",
        "type",
        "option-type",
        "option-choice",
    ],
)
def test_a_bad_file_is_an_error_naming_file_line_and_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    path = config(tmp_path, text, monkeypatch)
    code, out, err = run("lab", "list", capsys=capsys)
    assert code == 1
    assert err.splitlines()[0] == "Error: " + message.format(path=path)
    assert err.splitlines()[1] == (
        f"What to do: Correct {path} (docs/configuration.md lists what it may hold), or point "
        "HOSTSEAL_CONFIG at another file."
    )
    assert "Traceback" not in err and out == ""


def test_a_missing_file_named_by_hostseal_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOSTSEAL_CONFIG", str(tmp_path / "nope.toml"))
    code, _, err = run("lab", "list", capsys=capsys)
    assert code == 1
    assert err.splitlines() == [
        f"Error: The configuration file {tmp_path / 'nope.toml'} (HOSTSEAL_CONFIG) does not exist.",
        "What to do: Create it, or unset HOSTSEAL_CONFIG to use /etc/hostseal/hostseal.toml "
        "(which may be absent).",
    ]


def test_help_and_version_work_with_a_broken_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config(tmp_path, "this is not toml", monkeypatch)
    assert run("--version", capsys=capsys)[0] == 0
    assert run("--help", capsys=capsys)[0] == 0


def test_the_file_options_table_names_real_options_and_their_env_vars() -> None:
    """The table of what the file may set must not drift from the commands it names."""
    import click

    from hostseal.cli._filedefaults import FILE_OPTIONS
    from hostseal.cli.main import cli

    for path, options in FILE_OPTIONS.items():
        command: click.Command = cli
        for word in path:
            assert isinstance(command, click.Group)
            command = command.commands[word]
        flags = {o.lstrip("-"): p for p in command.params for o in p.opts if o.startswith("--")}
        for key, option in options.items():
            assert key in flags, f"{' '.join(path)} has no --{key}"
            param = flags[key]
            assert param.name == option.param
            declared, env = param.envvar, option.env
            assert declared in (None, env), f"--{key}: click reads {declared}, table says {env}"
            if env is not None:
                assert env in (param.help or "") or declared == env
            kinds = {click.INT: int, click.FLOAT: float, click.BOOL: bool}
            if isinstance(param.type, click.Choice):
                assert option.kind == tuple(param.type.choices)
            elif isinstance(param, click.Option) and param.is_flag:
                assert option.kind is bool
            else:
                assert option.kind is kinds.get(param.type, str), key


def test_the_shipped_example_file_is_valid_and_sets_nothing(tmp_path: Path) -> None:
    """packaging/hostseal.toml (the package's conffile) parses, and with every line commented
    out it changes no default; uncommented, every example key is accepted."""
    from hostseal.cli._filedefaults import default_map

    example = Path(__file__).resolve().parents[2] / "packaging" / "hostseal.toml"
    loaded = load_config_file({"HOSTSEAL_CONFIG": str(example)})
    assert loaded.host == {} and default_map(loaded, {}) == {}
    uncommented = tmp_path / "all.toml"
    lines = example.read_text().splitlines()
    uncommented.write_text(
        "\n".join(line.removeprefix("#") for line in lines if not line.startswith("# "))
    )
    every = load_config_file({"HOSTSEAL_CONFIG": str(uncommented)})
    assert set(every.host) == {"tcti", "eventlog", "bootbank", "tpm-ca-dir", "lab-dir"}
    assert default_map(every, {})["agent"]["run"]["server"].startswith("https://")
