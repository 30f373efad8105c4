"""Fixtures for vTPM tests: a vTPM directory of its own (short path, for UNIX sockets), a
native key provider that is backed up, and a way to use a running vTPM as a guest would."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from hostseal import vtpm
from hostseal.attest import EkCertificate, TrustStore, verify_ek_certificate
from hostseal.keyprovider import ProviderStore, _crypto
from hostseal.tpm import Tpm, open_tpm
from hostseal.vtpm import VtpmDirs
from hostseal.vtpm import ca as vtpm_ca

PASSWORD = b"correct horse battery staple"

pytestmark = pytest.mark.swtpm


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backups made in tests use a cheaper scrypt (the cost is stored in each backup)."""
    monkeypatch.setattr(_crypto, "SCRYPT_N", 2**14)


@pytest.fixture
def dirs() -> Iterator[VtpmDirs]:
    root = Path(tempfile.mkdtemp(prefix="hsv-", dir="/tmp"))
    d = VtpmDirs(root / "v", root / "v" / "keyproviders")
    yield d
    for extra in [d, *_extra_dirs]:
        for st in vtpm.list_vtpms(extra):
            with contextlib.suppress(Exception):
                vtpm.stop(extra, st.record.name)
    _extra_dirs.clear()
    shutil.rmtree(root, ignore_errors=True)


_extra_dirs: list[VtpmDirs] = []


@pytest.fixture
def other_dirs(dirs: VtpmDirs) -> VtpmDirs:
    """A second, empty vTPM directory using the same key providers (restores go there)."""
    d = VtpmDirs(dirs.root.parent / "restored", dirs.keyproviders)
    _extra_dirs.append(d)
    return d


@pytest.fixture
def providers(dirs: VtpmDirs, tmp_path: Path) -> ProviderStore:
    """A store with a native provider "native1" that is backed up (so it issues keys)."""
    store = ProviderStore(dirs.keyproviders)
    provider = store.add_native("native1")
    provider.write_backup(tmp_path / "native1.backup", PASSWORD)
    return store


@contextlib.contextmanager
def guest(dirs: VtpmDirs, providers: ProviderStore, name: str) -> Iterator[Tpm]:
    """Start the vTPM on TCP, open it through the swtpm TCTI, stop it afterwards."""
    st = vtpm.start(dirs, providers, name, tcp=True)
    assert st.runtime is not None and st.runtime.tcti is not None
    try:
        with open_tpm(st.runtime.tcti) as tpm:
            yield tpm
    finally:
        vtpm.stop(dirs, name)


def verify_vtpm_ek(der: bytes, ca_dir: Path) -> EkCertificate:
    """Verify a vTPM's EK certificate as the attestation service would: with attest's one EK
    certificate reader, against a trust store of this vTPM CA (its root the anchor)."""
    certificates = [c.public_bytes(Encoding.DER) for c in vtpm_ca.chain(ca_dir)]
    store = TrustStore.from_bytes(certificates[-1:], certificates[:-1], location=str(ca_dir))
    return verify_ek_certificate(der, store)
