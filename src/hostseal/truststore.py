"""The TPM CA trust store on disk, loaded into :class:`hostseal.attest.TrustStore` (an edge:
it reads files, for the service's EK-certificate checks).

The layout: PEM/DER files (``.pem``, ``.crt``, ``.cer``, ``.der``) or directories of them;
certificates under an ``intermediates`` sub-directory (or given as ``intermediates=``) only help
build chains, all others are trust anchors. This module reads the files; :mod:`hostseal.attest`
works on their bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hostseal.attest.ekcert import STORE_REMEDY, StoreSource, TrustStore
from hostseal.attest.errors import TrustStoreInvalid

__all__ = ["CERTIFICATE_SUFFIXES", "load_trust_store", "read_trust_store"]

CERTIFICATE_SUFFIXES = frozenset({".pem", ".crt", ".cer", ".der"})


def load_trust_store(directory: Path) -> TrustStore:
    """The store in ``directory`` (the server's ``trust_store`` setting), empty if it does not
    exist: verifying against an empty store fails and says where to get vendor CA bundles."""
    if not directory.exists():
        return TrustStore(location=str(directory))
    return read_trust_store(directory)


def read_trust_store(*paths: Path, intermediates: Iterable[Path] = ()) -> TrustStore:
    """A store from files and directories (the layout in the module documentation); a file that
    cannot be read is named in :attr:`TrustStore.problems` and left out.

    Raises :class:`TrustStoreInvalid` when a path does not exist.
    """
    helpers = list(intermediates)
    sources: list[StoreSource] = []
    problems: list[str] = []
    for given, as_anchor in [(p, True) for p in paths] + [(p, False) for p in helpers]:
        for file, intermediate in _certificate_files(given):
            try:
                data = file.read_bytes()
            except OSError as err:
                problems.append(f"{file}: {err.strerror or err}")
                continue
            sources.append(StoreSource(str(file), data, anchor=as_anchor and not intermediate))
    location = ", ".join(str(p) for p in [*paths, *helpers]) or "no paths given"
    return TrustStore.from_sources(sources, problems=problems, location=location)


def _certificate_files(path: Path) -> list[tuple[Path, bool]]:
    """(file, under an 'intermediates' directory) for a file or a directory tree."""
    if path.is_file():
        return [(path, False)]
    if not path.is_dir():
        raise TrustStoreInvalid(
            f"The TPM CA trust store path {path} does not exist.",
            STORE_REMEDY.format(where=path),
        )
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CERTIFICATE_SUFFIXES
    )
    return [(f, "intermediates" in f.relative_to(path).parts[:-1]) for f in files]
