"""create -> start -> use as a guest (through the swtpm TCTI) -> stop -> remove; the state on
disk is ciphertext."""

from __future__ import annotations

import math
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hostseal import swtpmproc, vtpm
from hostseal.keyprovider import ProviderStore
from hostseal.tpm import open_tpm, seal
from hostseal.vtpm import VtpmDirs, swtpm

from .conftest import guest, verify_vtpm_ek

pytestmark = pytest.mark.swtpm

PLATFORM_CERT_NV = 0x01C08000
ECC_P384_EK_CERT_NV = 0x01C00016


def entropy(data: bytes) -> float:
    counts = Counter(data)
    return -sum(c / len(data) * math.log2(c / len(data)) for c in counts.values())


def test_create_start_use_stop_remove(dirs: VtpmDirs, providers: ProviderStore) -> None:
    record = vtpm.create(dirs, providers, "vm1")
    assert set(record.ek_certificates) == {"rsa", "ecc"}
    assert record.provider == "native1"

    with guest(dirs, providers, "vm1") as tpm:
        first, second = tpm.get_random(32), tpm.get_random(32)
        assert len(first) == 32 and first != second
        # a key the guest creates and uses: sealed to PCR 7, unsealed again
        pcrs = tpm.pcr_read("sha256", [7])
        blob = seal.seal(tpm, b"guest disk key", "sha256", pcrs)
        assert seal.unseal(tpm, blob) == b"guest disk key"
        ek_der = tpm.ek_certificate("rsa")
        ek_public = tpm.ek_public("rsa")
        platform_cert = tpm._nv_read(PLATFORM_CERT_NV)
        ecc_der = tpm._nv_read(ECC_P384_EK_CERT_NV)

    # The EK certificate in NV chains to hostseal's vTPM CA and certifies this TPM's EK.
    assert ek_der is not None
    ca_cert = x509.load_pem_x509_certificate((dirs.ca / "ca.pem").read_bytes())
    ek_cert = x509.load_der_x509_certificate(ek_der)
    ek_cert.verify_directly_issued_by(ca_cert)
    assert ek_cert.issuer == ca_cert.subject
    ek_key = ek_cert.public_key()
    assert isinstance(ek_key, rsa.RSAPublicKey)
    assert ek_key.public_numbers().n.to_bytes(256, "big") in ek_public
    assert isinstance(verify_vtpm_ek(ek_der, dirs.ca).public_key, rsa.RSAPublicKey)
    assert isinstance(verify_vtpm_ek(ecc_der, dirs.ca).public_key, ec.EllipticCurvePublicKey)
    assert ek_der == record.ek_certificate("rsa")
    assert len(platform_cert) > 100  # an attribute certificate from the same CA

    st = vtpm.status(dirs, "vm1")
    assert not st.running

    # The state at rest is ciphertext.
    state = (st.path / "state" / swtpm.STATE_FILE).read_bytes()
    assert ek_der not in state and ek_der[:64] not in state
    assert b"hostseal vTPM CA" not in state and b"vm1" not in state
    assert ek_key.public_numbers().n.to_bytes(256, "big")[:32] not in state
    assert entropy(state) > 7.8, entropy(state)
    # ...and swtpm refuses it without the key (and with another key).
    no_key = subprocess.run(
        [
            "swtpm",
            "socket",
            "--tpm2",
            "--tpmstate",
            f"dir={st.path / 'state'}",
            "--ctrl",
            f"type=unixio,path={st.path / 'probe.sock'}",
            "--flags",
            "not-need-init",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert no_key.returncode != 0
    with pytest.raises(vtpm.SwtpmFailed, match="could not open the vTPM state"):
        swtpm.launch(
            st.path / "state",
            bytes(32),
            pidfile=st.path / "probe.pid",
            log=st.path / "probe.log",
            ctrl=f"type=unixio,path={st.path / 'probe.sock'}",
            server=None,
            ready=("unix", st.path / "probe.sock"),
            not_need_init=True,
        )

    vtpm.remove(dirs, providers, "vm1")
    assert not st.path.exists()
    assert vtpm.list_vtpms(dirs) == []


def test_unix_socket_for_qemu(dirs: VtpmDirs, providers: ProviderStore) -> None:
    vtpm.create(dirs, providers, "vmq")
    st = vtpm.start(dirs, providers, "vmq")
    try:
        assert st.running and st.runtime is not None and st.runtime.tcti is None
        sock = Path(st.runtime.socket)
        assert sock.is_socket()
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        assert f"path={sock}" in " ".join(vtpm.qemu_args(st.path))
        with pytest.raises(vtpm.VtpmRunning, match="already running"):
            vtpm.start(dirs, providers, "vmq")
    finally:
        vtpm.stop(dirs, "vmq")
    assert not vtpm.status(dirs, "vmq").running


def test_errors_say_what_to_do(dirs: VtpmDirs, providers: ProviderStore) -> None:
    with pytest.raises(vtpm.VtpmNotFound) as err:
        vtpm.start(dirs, providers, "nope")
    assert "hostseal vtpm create nope" in err.value.remedy
    with pytest.raises(vtpm.VtpmError, match="not a valid VM name"):
        vtpm.create(dirs, providers, "../etc")
    vtpm.create(dirs, providers, "vm1")
    with pytest.raises(vtpm.VtpmExists) as exists:
        vtpm.create(dirs, providers, "vm1")
    assert "hostseal vtpm remove vm1" in exists.value.remedy


def test_each_vtpm_is_a_new_tpm(dirs: VtpmDirs, providers: ProviderStore) -> None:
    vtpm.create(dirs, providers, "a")
    vtpm.create(dirs, providers, "b")
    records = {n: vtpm.status(dirs, n).record for n in ("a", "b")}
    assert records["a"].ek_certificates["rsa"] != records["b"].ek_certificates["rsa"]
    assert records["a"].uuid != records["b"].uuid
    assert records["a"].key_id != records["b"].key_id


def test_state_opens_as_libvirt_opens_it(dirs: VtpmDirs, providers: ProviderStore) -> None:
    """libvirt hands swtpm the secret's value as a passphrase (--key pwdfd=N): with the data key
    as that value, swtpm derives the same state key and opens the state."""
    record = vtpm.create(dirs, providers, "lv")
    data_key = providers.open().get_key(record.key_id).material
    state = dirs.vm("lv") / "state"
    port, ctrl = swtpmproc.free_port_pair()
    read_end, write_end = os.pipe()
    os.write(write_end, data_key)
    os.close(write_end)
    pidfile = dirs.vm("lv") / "lv.pid"
    try:
        started = subprocess.run(
            [
                "swtpm",
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={state}",
                "--server",
                f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init,startup-clear",
                "--key",
                f"pwdfd={read_end},mode=aes-256-cbc",
                "--pid",
                f"file={pidfile}",
                "--daemon",
            ],
            pass_fds=(read_end,),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    finally:
        os.close(read_end)
    assert started.returncode == 0, started.stderr
    try:
        with open_tpm(f"swtpm:host=127.0.0.1,port={port}") as tpm:
            assert tpm.ek_certificate("rsa") == record.ek_certificate("rsa")
    finally:
        pid = swtpmproc.pid_of(pidfile, state)
        assert pid is not None
        swtpmproc.kill(pid)
