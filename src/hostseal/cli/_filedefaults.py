"""Command options from the configuration file: its tables become click's ``default_map``.

``[agent.run] server = "https://attest.example:8443"`` in ``/etc/hostseal/hostseal.toml`` is the
default of ``hostseal agent run --server``. Precedence stays flag > environment > file > built-in
default: click itself puts a flag and an option's ``envvar`` above ``default_map``, and a file
value is left out when its environment variable (listed below, also for the options whose
variable the library reads rather than click) is set.

Only the options in :data:`FILE_OPTIONS` may be set: the ones operators type again and again.
One-shot flags (``--json``, ``--once``, ``--yes``, ``--reason``), secrets and development
allowances never come from a file. The host settings (``tcti``, ``bootbank`` ...) are top-level
keys read by :class:`hostseal.settings.Settings`, not options here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hostseal.settings import ConfigFile


@dataclass(frozen=True)
class FileOption:
    """An option the file may set: click's name for it, the environment variable that beats
    the file (None: it has none), and the kind of value (str, int, float, bool, or a tuple of
    the accepted words)."""

    param: str
    env: str | None = None
    kind: type | tuple[str, ...] = str


_SERVER = FileOption("server", "HOSTSEAL_SERVER")
_CA = FileOption("ca", "HOSTSEAL_SERVER_CA")

#: command path -> {option (its long flag without --) -> what it is}. A test checks every entry
#: against the real command, so that this table cannot drift from the commands.
FILE_OPTIONS: dict[tuple[str, ...], dict[str, FileOption]] = {
    ("agent", "run"): {
        "server": _SERVER,
        "ca": _CA,
        "interval": FileOption("interval", kind=float),
        "name": FileOption("name"),
        "state-dir": FileOption("state_dir", "HOSTSEAL_AGENT_DIR"),
        "escrow": FileOption("escrow", kind=bool),
        "enrolment-token-file": FileOption("enrolment_token_file", "HOSTSEAL_ENROLMENT_TOKEN_FILE"),
    },
    ("agent", "install-unit"): {
        "server": _SERVER,
        "ca": _CA,
        "interval": FileOption("interval", kind=int),
    },
    ("server", "run"): {
        "data-dir": FileOption("data_dir", "HOSTSEAL_SERVER_DATA"),
        "bind": FileOption("bind", "HOSTSEAL_SERVER_BIND"),
        "db": FileOption("database_url", "HOSTSEAL_SERVER_DB"),
        "ek-policy": FileOption(
            "ek_policy", "HOSTSEAL_SERVER_EK_POLICY", ("approve", "require-chain")
        ),
        "log-level": FileOption(
            "log_level", kind=("critical", "error", "warning", "info", "debug")
        ),
    },
    ("server", "install-unit"): {
        "data-dir": FileOption("unit_data_dir"),
        "bind": FileOption("bind"),
    },
}


def _table(path: tuple[str, ...]) -> str:
    return "[" + ".".join(path) + "]"


def default_map(file: ConfigFile, env: Mapping[str, str]) -> dict[str, object]:
    """click's ``default_map`` for the ``hostseal`` command from ``file``'s command tables,
    leaving out every value whose environment variable is set in ``env``. Raises
    ConfigFileInvalid for a table, key or value the file may not hold, naming the file and the
    line. Reads only :data:`FILE_OPTIONS`: no command module is imported."""
    result: dict[str, object] = {}
    for path, values in file.commands.items():
        allowed = _allowed(file, path)
        for key, value in values.items():
            if key not in allowed:
                raise file.invalid(
                    path,
                    key,
                    f"unknown key {key!r} in {_table(path)}. It may set: {', '.join(allowed)}.",
                )
            option = allowed[key]
            _check_type(file, path, key, option, value)
            if option.env is not None and env.get(option.env):
                continue
            node = result
            for word in path:
                node = node.setdefault(word, {})  # type: ignore[assignment]
            node[option.param] = value
    return result


def _allowed(file: ConfigFile, path: tuple[str, ...]) -> dict[str, FileOption]:
    """The options ``[path]`` may set; an error if the table is not a command of the table."""
    if path in FILE_OPTIONS:
        return FILE_OPTIONS[path]
    known = ", ".join(_table(p) for p in FILE_OPTIONS)
    below = [p for p in FILE_OPTIONS if p[: len(path)] == path]
    if below:  # a group: its sub-commands take the options
        key = next(iter(file.commands[path]))
        subs = ", ".join(_table(p) for p in below)
        raise file.invalid(
            path,
            key,
            f"unknown key {key!r} in {_table(path)}. It may set: nothing (its sub-commands "
            f"may: {subs}).",
        )
    depth = max(
        (n for n in range(len(path)) if any(p[:n] == path[:n] for p in FILE_OPTIONS)), default=0
    )
    wrong = path[: depth + 1]
    raise file.invalid(
        wrong,
        None,
        f"{_table(wrong)} is not a hostseal command that takes options from this file. "
        f"Tables: {known}.",
    )


def _check_type(
    file: ConfigFile, path: tuple[str, ...], key: str, option: FileOption, value: object
) -> None:
    """A value of the option's kind (a number, true/false, one of the words, a string)."""
    kind = option.kind
    if kind is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif kind is float:
        ok, want = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(kind, tuple):
        ok, want = value in kind, "one of " + ", ".join(kind)
    else:
        ok, want = isinstance(value, str) and bool(value), "a string in quotes"
    if not ok:
        raise file.invalid(path, key, f"{key} in {_table(path)} must be {want}, not {value!r}.")
