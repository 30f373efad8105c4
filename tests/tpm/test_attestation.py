"""The host side of attestation on a software TPM, checked by independent implementations:
tpm2_checkquote (tpm2-tools) verifies our quotes; tpm2-pytss's own MakeCredential produces the
challenge our ActivateCredential answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tpm2_pytss.types import TPM2B_NAME, TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential

from hostseal import lab
from hostseal.lab import LabHost
from hostseal.tpm import TpmError, open_tpm
from hostseal.tpm.attestation import AkUnavailable, activate_credential, ak_name, create_ak, quote

pytestmark = pytest.mark.swtpm


def checkquote(tmp: Path, ak_public: bytes, attest: bytes, signature: bytes, nonce: bytes) -> int:
    (tmp / "ak.pub").write_bytes(ak_public)
    (tmp / "q.msg").write_bytes(attest)
    (tmp / "q.sig").write_bytes(signature)
    return subprocess.run(
        [
            "tpm2_checkquote",
            "-u",
            str(tmp / "ak.pub"),
            "-m",
            str(tmp / "q.msg"),
            "-s",
            str(tmp / "q.sig"),
            "-q",
            nonce.hex(),
        ],
        capture_output=True,
    ).returncode


def test_quote_verifies_with_tpm2_checkquote(lab_host: LabHost, tmp_path: Path) -> None:
    nonce = bytes(range(32))
    with open_tpm(lab_host.tcti) as tpm:
        ak = create_ak(tpm)
        evidence = quote(tpm, ak, nonce, "sha256", [0, 4, 7, 8])
        assert evidence.pcrs == tpm.pcr_read("sha256", [0, 4, 7, 8])
    assert checkquote(tmp_path, ak.public, evidence.attest, evidence.signature, nonce) == 0
    assert checkquote(tmp_path, ak.public, evidence.attest, evidence.signature, b"x" * 32) != 0


@pytest.mark.parametrize("ek_kind", ["ecc", "rsa"])
def test_activate_credential(lab_host: LabHost, ek_kind: str) -> None:
    with open_tpm(lab_host.tcti) as tpm:
        ak = create_ak(tpm)
        ek_public, _ = TPM2B_PUBLIC.unmarshal(tpm.ek_public(ek_kind))
        blob, secret = make_credential(
            ek_public, b"server-secret-32-bytes-of-it!!!!", TPM2B_NAME(ak_name(ak))
        )
        got = activate_credential(tpm, ak, ek_kind, bytes(blob.marshal()), bytes(secret.marshal()))
        assert got == b"server-secret-32-bytes-of-it!!!!"
        # Bound to this AK: another AK's name makes the TPM refuse.
        other = create_ak(tpm)
        blob, secret = make_credential(ek_public, b"s" * 32, TPM2B_NAME(ak_name(other)))
        with pytest.raises(TpmError):
            activate_credential(tpm, ak, ek_kind, bytes(blob.marshal()), bytes(secret.marshal()))


def test_ak_does_not_load_after_tpm_replaced(lab_dir: Path, lab_host: LabHost) -> None:
    with open_tpm(lab_host.tcti) as tpm:
        ak = create_ak(tpm)
    host = lab.replace_tpm(lab_dir, lab_host.name)
    with open_tpm(host.tcti) as tpm, pytest.raises(AkUnavailable) as err:
        quote(tpm, ak, b"n" * 32, "sha256", [7])
    assert "the TPM was replaced or cleared" in err.value.message
