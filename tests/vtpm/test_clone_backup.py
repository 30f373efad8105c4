"""Clones (copy keeps the TPM, replace makes a new one) and backups (restored elsewhere, the
same EK and what the guest wrote to NV)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hostseal import vtpm
from hostseal.keyprovider import KeyProviderNotFound, ProviderStore
from hostseal.tpm import open_tpm
from hostseal.vtpm import VtpmDirs, swtpm

from .conftest import guest
from .nvtools import nv_defined, nv_read, nv_write

pytestmark = pytest.mark.swtpm

GUEST_VALUE = b"guest wrote this"


def _tcti(dirs: VtpmDirs, providers: ProviderStore, name: str) -> str:
    st = vtpm.start(dirs, providers, name, tcp=True)
    assert st.runtime is not None and st.runtime.tcti is not None
    return st.runtime.tcti


def _identity(dirs: VtpmDirs, providers: ProviderStore, name: str) -> tuple[bytes, bool]:
    """(the EK certificate in NV, whether the guest's NV index exists)"""
    tcti = _tcti(dirs, providers, name)
    try:
        with open_tpm(tcti) as tpm:
            cert = tpm.ek_certificate("rsa")
        assert cert is not None
        return cert, nv_defined(tcti)
    finally:
        vtpm.stop(dirs, name)


@pytest.fixture
def source(dirs: VtpmDirs, providers: ProviderStore) -> str:
    """vTPM "src", in which the guest defined an NV index and wrote a value."""
    vtpm.create(dirs, providers, "src")
    tcti = _tcti(dirs, providers, "src")
    try:
        nv_write(tcti, GUEST_VALUE)
    finally:
        vtpm.stop(dirs, "src")
    return "src"


def test_copy_clone_keeps_the_tpm(dirs: VtpmDirs, providers: ProviderStore, source: str) -> None:
    record = vtpm.clone(dirs, providers, source, "copy1", "copy")
    src = vtpm.status(dirs, source).record
    assert record.key_id != src.key_id  # re-encrypted under a new data key
    assert record.ek_certificates == src.ek_certificates
    assert record.origin["kind"] == "clone-copy"
    copied = (dirs.vm("copy1") / "state" / swtpm.STATE_FILE).read_bytes()
    original = (dirs.vm(source) / "state" / swtpm.STATE_FILE).read_bytes()
    assert copied != original
    with guest(dirs, providers, "copy1") as tpm:
        ek_copy = tpm.ek_public("rsa")
        cert_copy = tpm.ek_certificate("rsa")
        tcti = str(tpm.tcti)
        assert nv_read(tcti, len(GUEST_VALUE)) == GUEST_VALUE
    with guest(dirs, providers, source) as tpm:
        assert tpm.ek_public("rsa") == ek_copy
        assert tpm.ek_certificate("rsa") == cert_copy


def test_replace_clone_is_a_new_tpm(dirs: VtpmDirs, providers: ProviderStore, source: str) -> None:
    record = vtpm.clone(dirs, providers, source, "fresh", "replace")
    src = vtpm.status(dirs, source).record
    assert record.ek_certificates["rsa"] != src.ek_certificates["rsa"]
    assert record.origin == {**record.origin, "kind": "clone-replace", "from": source}
    cert, has_nv = _identity(dirs, providers, "fresh")
    assert base64.b64encode(cert).decode() == record.ek_certificates["rsa"]
    assert not has_nv  # empty: nothing the source's guest stored


def test_copy_needs_the_source_stopped(dirs: VtpmDirs, providers: ProviderStore) -> None:
    vtpm.create(dirs, providers, "busy")
    vtpm.start(dirs, providers, "busy", tcp=True)
    try:
        with pytest.raises(vtpm.VtpmRunning, match="needs it stopped") as err:
            vtpm.clone(dirs, providers, "busy", "copy", "copy")
        assert "hostseal vtpm stop busy" in err.value.remedy
        assert not dirs.vm("copy").exists()
    finally:
        vtpm.stop(dirs, "busy")


def test_backup_restore_into_empty_directory(
    dirs: VtpmDirs, other_dirs: VtpmDirs, providers: ProviderStore, source: str, tmp_path: Path
) -> None:
    out = tmp_path / "src.vtpm-backup"
    info = vtpm.backup(dirs, source, out)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    document = json.loads(out.read_bytes())
    content = json.loads(base64.b64decode(document["content"]))
    key = content["record"]["key"]
    assert key["provider"] == "native1" and key["key_id"] == info["key"]["key_id"]  # type: ignore[index]
    data_key = providers.open("native1").get_key(key["key_id"]).material
    assert data_key not in out.read_bytes() and data_key not in base64.b64decode(
        document["content"]
    )

    assert not other_dirs.root.exists()
    record = vtpm.restore(other_dirs, providers, out.read_bytes())
    assert record.name == source
    with guest(other_dirs, providers, source) as tpm:
        restored_ek = tpm.ek_public("rsa")
        assert nv_read(str(tpm.tcti), len(GUEST_VALUE)) == GUEST_VALUE
    with guest(dirs, providers, source) as tpm:
        assert tpm.ek_public("rsa") == restored_ek

    # under another name, next to the original
    renamed = vtpm.restore(dirs, providers, out.read_bytes(), name="src-restored")
    assert renamed.uuid != vtpm.status(dirs, source).record.uuid
    with pytest.raises(vtpm.VtpmExists):
        vtpm.restore(dirs, providers, out.read_bytes())


def test_restore_checks_before_writing(
    dirs: VtpmDirs, other_dirs: VtpmDirs, providers: ProviderStore, source: str, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    vtpm.backup(dirs, source, out)
    good = out.read_bytes()

    document = json.loads(good)
    content = bytearray(base64.b64decode(document["content"]))
    content[len(content) // 2] ^= 1
    document["content"] = base64.b64encode(bytes(content)).decode()
    with pytest.raises(vtpm.VtpmBackupDamaged, match="checksum does not match") as err:
        vtpm.restore(other_dirs, providers, json.dumps(document).encode())
    assert "Nothing was written" in err.value.message
    with pytest.raises(vtpm.VtpmBackupDamaged, match="not JSON"):
        vtpm.restore(other_dirs, providers, good[:-40])
    # the key is not obtainable here: no such provider
    empty = ProviderStore(tmp_path / "no-providers")
    with pytest.raises(KeyProviderNotFound, match="native1"):
        vtpm.restore(other_dirs, empty, good)
    assert not other_dirs.root.exists()


def test_backup_needs_the_vtpm_stopped(
    dirs: VtpmDirs, providers: ProviderStore, tmp_path: Path
) -> None:
    vtpm.create(dirs, providers, "running")
    vtpm.start(dirs, providers, "running")
    try:
        with pytest.raises(vtpm.VtpmRunning, match="needs it stopped"):
            vtpm.backup(dirs, "running", tmp_path / "x")
    finally:
        vtpm.stop(dirs, "running")
    assert not (tmp_path / "x").exists()
