"""Checks that read the platform rather than the TPM: TPM 1.2 devices, efivars, TSS errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import TPM2_RC

from hostseal.hostinfo import secure_boot_from_efivars
from hostseal.tpm import TpmBusy, TpmLockout, TpmNotSupported, TpmUnavailable, parse_tcti
from hostseal.tpm.device import check_device, translate


def test_tpm12_device_is_refused_with_remedy(tmp_path: Path) -> None:
    device = tmp_path / "tpm0"
    device.write_bytes(b"")
    sysfs = tmp_path / "sys"
    (sysfs / "tpm0").mkdir(parents=True)
    (sysfs / "tpm0" / "tpm_version_major").write_text("1\n")
    with pytest.raises(TpmNotSupported) as err:
        check_device(parse_tcti(f"device:{device}"), sysfs)
    assert err.value.message == f"The TPM at {device} is a TPM 1.2; hostseal needs TPM 2.0."
    assert "Switch the TPM to TPM 2.0 mode in the firmware setup" in err.value.remedy
    (sysfs / "tpm0" / "tpm_version_major").write_text("2\n")
    check_device(parse_tcti(f"device:{device}"), sysfs)  # a TPM 2.0 passes


@pytest.mark.parametrize(
    ("value", "expected"), [(b"\x06\0\0\0\x01", True), (b"\x06\0\0\0\x00", False)]
)
def test_secure_boot_from_efivars(tmp_path: Path, value: bytes, expected: bool) -> None:
    (tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c").write_bytes(value)
    state = secure_boot_from_efivars(tmp_path)
    assert state is not None and state.enabled is expected and state.source == "efivars"


def test_no_efivars_means_unknown(tmp_path: Path) -> None:
    assert secure_boot_from_efivars(tmp_path) is None


TSS_ERRORS = {
    "retry": (int(TPM2_RC.RETRY), TpmBusy, "The TPM is busy"),
    "testing": (int(TPM2_RC.TESTING), TpmBusy, "The TPM is busy"),
    "lockout": (int(TPM2_RC.LOCKOUT), TpmLockout, "dictionary-attack lockout"),
    "not started": (int(TPM2_RC.INITIALIZE), TpmUnavailable, "has not been started"),
    "tcti io": (0x000A000A, TpmUnavailable, "No TPM answered"),
}


@pytest.mark.parametrize(("rc", "kind", "text"), TSS_ERRORS.values(), ids=TSS_ERRORS.keys())
def test_tss_errors_become_remedies(rc: int, kind: type[Exception], text: str) -> None:
    err = translate(TSS2_Exception(rc), parse_tcti("device:/dev/tpmrm0"), "read PCRs")
    assert isinstance(err, kind)
    assert text in err.message
    assert err.remedy
