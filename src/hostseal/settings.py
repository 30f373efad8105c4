"""Typed settings of the host side, and the configuration file they may come from.

Precedence, lowest first: built-in default < the configuration file < environment variable <
command-line flag. The file is ``/etc/hostseal/hostseal.toml``, or the file ``HOSTSEAL_CONFIG``
names (docs/configuration.md). Its top-level keys are the host settings below; its tables hold
defaults for command options (``[agent.run] server = "https://..."``), which the CLI applies
(:mod:`hostseal.cli._filedefaults`). The CLI builds one :class:`Settings` per invocation with
:meth:`Settings.from_env` and overrides fields from flags; nothing is read at import time.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from hostseal.errors import HostsealError

DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_EVENTLOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
DEFAULT_BOOTBANK = Path("/var/lib/hostseal/bootbank")
DEFAULT_TPM_CA_DIR = Path("/etc/hostseal/tpm-ca")

CONFIG_ENV = "HOSTSEAL_CONFIG"
DEFAULT_CONFIG = Path("/etc/hostseal/hostseal.toml")

#: The host settings: the file's top-level key -> (the field of Settings, its environment variable)
HOST_SETTINGS: dict[str, tuple[str, str]] = {
    "tcti": ("tcti", "HOSTSEAL_TCTI"),
    "eventlog": ("eventlog", "HOSTSEAL_EVENTLOG"),
    "bootbank": ("bootbank", "HOSTSEAL_BOOTBANK"),
    "tpm-ca-dir": ("tpm_ca_dir", "HOSTSEAL_TPM_CA_DIR"),
    "lab-dir": ("lab_dir", "HOSTSEAL_LAB_DIR"),
}


def default_lab_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/hostseal-lab`` if set, else ``~/.local/state/hostseal/lab``."""
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "hostseal-lab"
    return Path.home() / ".local" / "state" / "hostseal" / "lab"


# -- the configuration file ------------------------------------------------------------------


class ConfigFileInvalid(HostsealError):
    """The configuration file is missing (when named), not TOML, or holds an unknown key."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(
            message,
            f"Correct {path} (docs/configuration.md lists what it may hold), or point "
            f"{CONFIG_ENV} at another file.",
        )


@dataclass(frozen=True)
class ConfigFile:
    """A parsed configuration file: the host settings (top-level keys) and the tables of
    command options (``("agent", "run") -> {"server": ...}``), not yet checked against the
    commands. ``path`` is ``None`` when there is no file."""

    path: Path | None = None
    host: Mapping[str, str] = field(default_factory=dict)
    commands: Mapping[tuple[str, ...], Mapping[str, object]] = field(default_factory=dict)
    text: str = ""

    def line_of(self, table: tuple[str, ...], key: str | None = None) -> int:
        """The line (from 1) of ``key`` in ``[table]``, or of the table's header; 0 if unseen."""
        current: tuple[str, ...] = ()
        header = 0
        for number, line in enumerate(self.text.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("["):
                current = tuple(w.strip().strip("\"'") for w in stripped.strip("[]").split("."))
                if key is None and current[: len(table)] == table:
                    return number
                header = number if current == table else header
            elif current == table and key is not None and _names(stripped, key):
                return number
        return header

    def invalid(self, table: tuple[str, ...], key: str | None, message: str) -> ConfigFileInvalid:
        """An error about ``key`` of ``[table]`` that names the file and the line."""
        assert self.path is not None
        line = self.line_of(table, key)
        where = f"{self.path} line {line}" if line else str(self.path)
        return ConfigFileInvalid(self.path, f"{where}: {message}")


def _names(line: str, key: str) -> bool:
    """Whether the TOML ``line`` sets ``key`` (bare or quoted)."""
    return re.match(rf"[\"']?{re.escape(key)}[\"']?\s*=", line) is not None


def load_config_file(env: Mapping[str, str], default: Path = DEFAULT_CONFIG) -> ConfigFile:
    """Read the file ``HOSTSEAL_CONFIG`` names (it must exist), else ``default`` (it may be
    absent). Raises :class:`ConfigFileInvalid` naming the file and the line."""
    named = env.get(CONFIG_ENV)
    path = Path(named) if named else default
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not named:
            return ConfigFile()
        raise HostsealError(
            f"The configuration file {path} ({CONFIG_ENV}) does not exist.",
            f"Create it, or unset {CONFIG_ENV} to use {default} (which may be absent).",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
        raise ConfigFileInvalid(
            path, f"Cannot read the configuration file {path}: {reason}."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileInvalid(path, f"{path} is not valid TOML: {err}.") from None
    return _split(ConfigFile(path=path, text=text), data)


def _split(empty: ConfigFile, data: Mapping[str, object]) -> ConfigFile:
    """The host settings and the command tables of the parsed ``data``."""
    host: dict[str, str] = {}
    commands: dict[tuple[str, ...], dict[str, object]] = {}

    def walk(table: tuple[str, ...], values: Mapping[str, object]) -> None:
        for key, value in values.items():
            if isinstance(value, dict):
                walk((*table, key), value)
            elif table:
                commands.setdefault(table, {})[key] = value
            else:
                host[key] = _host_value(empty, key, value)

    walk((), data)
    return replace(empty, host=host, commands=commands)


def _host_value(file: ConfigFile, key: str, value: object) -> str:
    if key not in HOST_SETTINGS:
        raise file.invalid(
            (),
            key,
            f"unknown key {key!r} at the top. Host settings: {', '.join(HOST_SETTINGS)}; "
            "command options go in a table such as [agent.run].",
        )
    if not isinstance(value, str) or not value:
        raise file.invalid((), key, f"{key} must be a string (a path or TCTI in quotes).")
    return value


# -- the settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where hostseal finds the TPM, the event log and its own state.

    Each is the file's top-level key / its environment variable / a flag where there is one:

    ``tcti``      -- ``tcti`` / ``HOSTSEAL_TCTI`` / ``--tcti``; default ``device:/dev/tpmrm0``.
    ``eventlog``  -- ``eventlog`` / ``HOSTSEAL_EVENTLOG`` / ``--eventlog``; default the kernel's
                     securityfs log.
    ``lab_dir``   -- ``lab-dir`` / ``HOSTSEAL_LAB_DIR``; default ``$XDG_RUNTIME_DIR/hostseal-lab``
                     or ``~/.local/state/hostseal/lab``.
    ``bootbank``  -- ``bootbank`` / ``HOSTSEAL_BOOTBANK`` / ``--bootbank``; default
                     ``/var/lib/hostseal/bootbank``.
    ``tpm_ca_dir``-- ``tpm-ca-dir`` / ``HOSTSEAL_TPM_CA_DIR``: TPM vendor CA certificates that EK
                     certificates are checked against; default ``/etc/hostseal/tpm-ca`` (empty
                     until you add a vendor bundle: see docs/attestation.md).
    """

    tcti: str = DEFAULT_TCTI
    eventlog: Path = DEFAULT_EVENTLOG
    lab_dir: Path = Path()
    bootbank: Path = DEFAULT_BOOTBANK
    tpm_ca_dir: Path = DEFAULT_TPM_CA_DIR

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, file: ConfigFile | None = None
    ) -> Settings:
        """The settings from the environment over ``file``'s top-level keys over the defaults."""
        env = os.environ if env is None else env
        given = {key: file.host[key] for key in HOST_SETTINGS if file and key in file.host}
        for key, (_, variable) in HOST_SETTINGS.items():
            if env.get(variable):
                given[key] = env[variable]
        return cls(
            tcti=given.get("tcti") or DEFAULT_TCTI,
            eventlog=Path(given.get("eventlog") or DEFAULT_EVENTLOG),
            lab_dir=Path(given.get("lab-dir") or default_lab_dir(env)),
            bootbank=Path(given.get("bootbank") or DEFAULT_BOOTBANK),
            tpm_ca_dir=Path(given.get("tpm-ca-dir") or DEFAULT_TPM_CA_DIR),
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the non-``None`` values of ``changes`` applied (flags over environment)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]
