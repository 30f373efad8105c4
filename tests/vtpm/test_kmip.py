"""The KMIP key provider against a real PyKMIP server (mutual TLS, SQLite)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostseal import vtpm
from hostseal.keyprovider import (
    KeyNotFound,
    KmipProvider,
    KmipUnavailable,
    ProviderStore,
)
from hostseal.tpm import open_tpm
from hostseal.vtpm import VtpmDirs, swtpm

from .kmipserver import KmipServer, running_kmip_server

pytestmark = pytest.mark.swtpm


@pytest.fixture(scope="module")
def kms() -> Iterator[KmipServer]:
    directory = Path(tempfile.mkdtemp(prefix="hs-kms-"))
    try:
        with running_kmip_server(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _add(store: ProviderStore, kms: KmipServer, name: str = "kms") -> KmipProvider:
    c = kms.client
    return store.add_kmip(name, kms.host, kms.server_ca, c.cert, c.key, port=kms.port)


def test_keys_created_activated_and_fetched(kms: KmipServer, tmp_path: Path) -> None:
    provider = _add(ProviderStore(tmp_path / "kp"), kms)
    key = provider.create_key("vtpm:vm1")
    assert len(key.material) == 32
    assert provider.get_key(key.key_id) == key
    record = provider.key_record(key)
    assert record["server"] == f"127.0.0.1:{kms.port}" and record["key_id"] == key.key_id
    assert key.material.hex() not in str(record)
    assert provider.key_for_record(record) == key
    provider.destroy_key(key.key_id)
    with pytest.raises(KeyNotFound, match="has no such key"):
        provider.get_key(key.key_id)


def test_vtpm_with_kmip_keys(kms: KmipServer, dirs: VtpmDirs, providers: ProviderStore) -> None:
    provider = _add(providers, kms)
    record = vtpm.create(dirs, providers, "vmk", key_provider="kms")
    assert record.provider == "kms"
    st = vtpm.start(dirs, providers, "vmk", tcp=True)
    assert st.runtime is not None and st.runtime.tcti is not None
    try:
        with open_tpm(st.runtime.tcti) as tpm:
            assert len(tpm.get_random(16)) == 16
            assert tpm.ek_certificate("rsa") == record.ek_certificate("rsa")
    finally:
        vtpm.stop(dirs, "vmk")
    # nothing cached on disk in clear: neither the data key nor swtpm's state key
    material = provider.get_key(record.key_id).material
    secrets = [material, material.hex().encode(), swtpm.state_key(material)]
    secrets.append(swtpm.state_key(material).hex().encode())
    for path in dirs.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path


def test_mutual_tls_is_required(kms: KmipServer, tmp_path: Path) -> None:
    store = ProviderStore(tmp_path / "kp")
    rogue = kms.rogue
    with pytest.raises(KmipUnavailable) as err:
        store.add_kmip("bad", kms.host, kms.server_ca, rogue.cert, rogue.key, port=kms.port)
    assert (
        f"Could not reach the KMIP key provider 'bad' at 127.0.0.1:{kms.port}" in err.value.message
    )
    assert store.list() == []

    c = kms.client
    with pytest.raises(KmipUnavailable) as wrong_ca:  # the server's certificate: another CA
        store.add_kmip("bad", kms.host, rogue.ca, c.cert, c.key, port=kms.port)
    assert "did not verify" in wrong_ca.value.remedy

    with pytest.raises(KmipUnavailable) as wrong_name:  # its certificate names 127.0.0.1 only
        store.add_kmip("bad", "localhost", kms.server_ca, c.cert, c.key, port=kms.port)
    assert "for host 'localhost'" in wrong_name.value.remedy


def test_kms_down(tmp_path: Path, kms: KmipServer) -> None:
    c = kms.client
    down = KmipProvider("down", "127.0.0.1", 1, kms.server_ca, c.cert, c.key)
    with pytest.raises(KmipUnavailable) as err:
        down.get_key("1")
    assert "Check that the KMS listens at 127.0.0.1:1" in err.value.remedy
