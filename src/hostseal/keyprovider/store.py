"""The configured key providers, kept in one directory (mode 0700).

* ``providers.json`` -- every provider's kind and settings (no secrets), and the default one;
* ``native/<name>/`` -- each native provider's KEK and wrapped keys (see :mod:`.native`);
* ``release.json``  -- optional: release keys only to this host while its last attestation
  passed (the attestation service's address and the agent's token file).

The directory is ``HOSTSEAL_KEYPROVIDER_DIR``, by default ``keyproviders/`` in the vTPM directory
(``HOSTSEAL_VTPM_DIR``, see :func:`hostseal.vtpm.paths.default_vtpm_dir`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hostseal.client.transport import check_server_url
from hostseal.fsutil import atomic_write
from hostseal.keyprovider.base import KeyProvider, check_name
from hostseal.keyprovider.errors import KeyProviderError, KeyProviderNotFound
from hostseal.keyprovider.kmip import DEFAULT_PORT, KmipProvider
from hostseal.keyprovider.native import NativeProvider
from hostseal.keyprovider.release import AttestationGate, GatedProvider, HttpVerdictSource

CONFIG = "providers.json"
RELEASE = "release.json"
KINDS = ("native", "kmip")


class ProviderStore:
    """The key providers configured in ``path``.

    ``gate``: release keys only when this gate passes. ``None`` (the default) uses the gate
    configured in ``release.json``, if any.
    """

    def __init__(self, path: Path, gate: AttestationGate | None = None) -> None:
        self.path = path
        self._gate = gate

    # -- configuration file ----------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.path / CONFIG).read_text())
        except FileNotFoundError:
            return {"version": 1, "default": None, "providers": {}}
        except (OSError, ValueError) as err:
            raise KeyProviderError(
                f"The key provider configuration {self.path / CONFIG} is unreadable ({err}).",
                "Run hostseal as root; if the file is damaged, restore it from a backup.",
            ) from None
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self._ensure_dir()
        atomic_write(self.path / CONFIG, json.dumps(doc, indent=2).encode(), mode=0o600)

    def _ensure_dir(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _add(self, name: str, settings: dict[str, Any], make_default: bool | None) -> None:
        doc = self._load()
        doc["providers"][name] = settings
        if make_default or (make_default is None and not doc.get("default")):
            doc["default"] = name
        self._save(doc)

    def _check_new(self, name: str) -> None:
        check_name(name)
        if name in self._load()["providers"]:
            raise KeyProviderError(
                f"A key provider named {name!r} already exists.",
                "Choose another name, or remove it first (hostseal keyprovider remove).",
            )

    # -- adding and removing -------------------------------------------------------------
    def add_native(self, name: str, make_default: bool | None = None) -> NativeProvider:
        """A new native provider with a fresh KEK. It issues no key before it is backed up."""
        self._check_new(name)
        self._ensure_dir()
        provider = NativeProvider.create(self._native_dir(name), name)
        self._add(name, {"kind": "native"}, make_default)
        return provider

    def add_native_from_backup(
        self, name: str, backup: bytes, password: bytes, make_default: bool | None = None
    ) -> NativeProvider:
        """A native provider restored from its password-protected backup."""
        self._check_new(name)
        from hostseal.keyprovider.native import open_backup

        open_backup(backup, password)  # wrong password or damaged file: nothing written
        self._ensure_dir()
        provider = NativeProvider.restore(self._native_dir(name), name, backup, password)
        self._add(name, {"kind": "native"}, make_default)
        return provider

    def add_kmip(
        self,
        name: str,
        host: str,
        ca: Path,
        cert: Path,
        key: Path,
        port: int = DEFAULT_PORT,
        check: bool = True,
        make_default: bool | None = None,
    ) -> KmipProvider:
        """A KMIP provider; with ``check`` a mutual-TLS session is opened first."""
        self._check_new(name)
        provider = KmipProvider(name, host, port, ca.resolve(), cert.resolve(), key.resolve())
        if check:
            provider.check()
        settings = {
            "kind": "kmip",
            "host": host,
            "port": port,
            "ca": str(provider.ca),
            "cert": str(provider.cert),
            "key": str(provider.key),
        }
        self._add(name, settings, make_default)
        return provider

    def remove(self, name: str) -> None:
        """Forget a provider. A native provider's KEK is deleted with it: keep its backup."""
        doc = self._load()
        if name not in doc["providers"]:
            raise self._not_found(name, doc)
        del doc["providers"][name]
        if doc.get("default") == name:
            doc["default"] = next(iter(doc["providers"]), None)
        self._save(doc)
        native_dir = self._native_dir(name)
        if native_dir.exists():
            shutil.rmtree(native_dir)

    def set_default(self, name: str) -> None:
        doc = self._load()
        if name not in doc["providers"]:
            raise self._not_found(name, doc)
        doc["default"] = name
        self._save(doc)

    # -- using -----------------------------------------------------------------------------
    def _native_dir(self, name: str) -> Path:
        return self.path / "native" / name

    def _not_found(self, name: str | None, doc: dict[str, Any]) -> KeyProviderNotFound:
        names = ", ".join(sorted(doc["providers"])) or "none"
        if name is None:
            return KeyProviderNotFound(
                f"No key provider is configured (in {self.path}).",
                "Add one: hostseal keyprovider add NAME --type native, then back it up with "
                "hostseal keyprovider backup NAME --out FILE (or --type kmip for a KMS).",
            )
        return KeyProviderNotFound(
            f"There is no key provider named {name!r} (configured: {names}).",
            "See hostseal keyprovider list; add one with hostseal keyprovider add.",
        )

    def default_name(self) -> str | None:
        name = self._load().get("default")
        return str(name) if name else None

    def raw(self, name: str | None = None) -> KeyProvider:
        """The provider ``name`` (default: the default provider), without the release gate."""
        doc = self._load()
        chosen = name or doc.get("default")
        settings = doc["providers"].get(chosen) if chosen else None
        if settings is None or not isinstance(chosen, str):
            raise self._not_found(chosen, doc)
        name = chosen
        if settings["kind"] == "native":
            return NativeProvider(name, self._native_dir(name))
        if settings["kind"] == "kmip":
            return KmipProvider(
                name,
                settings["host"],
                int(settings["port"]),
                Path(settings["ca"]),
                Path(settings["cert"]),
                Path(settings["key"]),
            )
        raise KeyProviderError(
            f"Key provider {name!r} has an unknown kind {settings['kind']!r}.",
            f"Known kinds: {', '.join(KINDS)}.",
        )

    def open(self, name: str | None = None) -> KeyProvider:
        """The provider ``name`` (default: the default provider), behind the release gate."""
        provider = self.raw(name)
        gate = self.gate()
        return GatedProvider(provider, gate) if gate is not None else provider

    def native(self, name: str) -> NativeProvider:
        provider = self.raw(name)
        if not isinstance(provider, NativeProvider):
            raise KeyProviderError(
                f"Key provider {name!r} is a {provider.kind} provider, not a native one.",
                "Only native key providers are backed up by hostseal; back up a KMS with its "
                "own tools.",
            )
        return provider

    def list(self) -> list[dict[str, object]]:
        doc = self._load()
        out: list[dict[str, object]] = []
        for name in sorted(doc["providers"]):
            try:
                info = self.raw(name).describe()
            except KeyProviderError as err:
                info = {"name": name, "kind": doc["providers"][name]["kind"], "error": str(err)}
            info["default"] = name == doc.get("default")
            out.append(info)
        return out

    # -- attestation-tied release ------------------------------------------------------------
    def gate(self) -> AttestationGate | None:
        if self._gate is not None:
            return self._gate
        config = self.release_config()
        if not config:
            return None
        source = HttpVerdictSource(
            str(config["server"]),
            Path(str(config["token_file"])),
            Path(str(config["ca"])) if config.get("ca") else None,
            allow_plain_http_loopback=config.get("allow_plain_http_loopback") is True,
        )
        return AttestationGate(source, str(config["host"]))

    def release_config(self) -> dict[str, object] | None:
        try:
            config: dict[str, object] = json.loads((self.path / RELEASE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise KeyProviderError(
                f"The key release configuration {self.path / RELEASE} is unreadable ({err}); "
                "no key is released until it is fixed.",
                "Run hostseal as root, or set it again: hostseal keyprovider "
                "require-attestation ...",
            ) from None
        return config

    def require_attestation(
        self,
        host: str,
        server: str,
        token_file: Path,
        ca: Path | None = None,
        *,
        allow_plain_http_loopback: bool = False,
    ) -> None:
        """From now on, release keys only while ``host``'s last attestation passed. The
        server must be https:// (plain HTTP only to loopback with the development allowance,
        which is then kept in the configuration)."""
        server = check_server_url(server, allow_plain_http_loopback=allow_plain_http_loopback)
        config: dict[str, object] = {
            "host": host,
            "server": server,
            "token_file": str(token_file.resolve()),
            "ca": str(ca.resolve()) if ca else None,
        }
        if allow_plain_http_loopback:
            config["allow_plain_http_loopback"] = True
        self._ensure_dir()
        atomic_write(self.path / RELEASE, json.dumps(config, indent=2).encode(), mode=0o600)

    def release_without_attestation(self) -> None:
        (self.path / RELEASE).unlink(missing_ok=True)


def default_keyprovider_dir(vtpm_dir: Path, env: dict[str, str] | None = None) -> Path:
    """``HOSTSEAL_KEYPROVIDER_DIR``, else ``<vTPM directory>/keyproviders``."""
    env = dict(os.environ) if env is None else env
    given = env.get("HOSTSEAL_KEYPROVIDER_DIR")
    return Path(given) if given else vtpm_dir / "keyproviders"
