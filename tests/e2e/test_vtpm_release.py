"""vTPM keys are released only while the host's last attestation passed, asked of the real
attestation service with the host agent's own token."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hostseal import lab, vtpm
from hostseal.keyprovider import KeyReleaseRefused, ProviderStore, _crypto
from hostseal.vtpm import VtpmDirs

from .conftest import Fleet
from .test_fleet import three_passing_hosts

pytestmark = pytest.mark.swtpm


def test_vtpm_key_release_follows_attestation(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_crypto, "SCRYPT_N", 2**14)  # a cheaper backup password hash in tests
    three_passing_hosts(fleet)
    root = Path(tempfile.mkdtemp(prefix="hsv-", dir="/tmp"))  # short: UNIX socket paths
    dirs = VtpmDirs(root / "v", root / "v" / "keyproviders")
    try:
        store = ProviderStore(dirs.keyproviders)
        store.add_native("native1").write_backup(tmp_path / "kp.backup", b"a long passphrase")
        store.require_attestation(
            "esx1", fleet.service.url, fleet.root / "esx1" / "agent" / "token", fleet.service.ca
        )
        vtpm.create(dirs, store, "vm1")
        assert vtpm.start(dirs, store, "vm1", tcp=True).running
        vtpm.stop(dirs, "vm1")

        host = fleet.hosts["esx1"]
        lab.reboot(fleet.lab_dir, "esx1", host.boot.with_changes(secure_boot=False))
        assert fleet.attest("esx1").status == "Failed"
        with pytest.raises(KeyReleaseRefused) as err:
            vtpm.start(dirs, store, "vm1", tcp=True)
        assert "Host 'esx1' did not pass attestation (last status: failed" in err.value.message
        assert "Host secure boot was disabled" in err.value.message
        assert not vtpm.status(dirs, "vm1").running

        lab.reboot(fleet.lab_dir, "esx1", host.boot.with_changes(secure_boot=True))
        assert fleet.attest("esx1").status == "Passed"
        assert vtpm.start(dirs, store, "vm1", tcp=True).running
        vtpm.stop(dirs, "vm1")
    finally:
        for st in vtpm.list_vtpms(dirs):
            if st.running:
                vtpm.stop(dirs, st.record.name)
        shutil.rmtree(root, ignore_errors=True)
