"""TCTI strings: accepted forms and the messages for wrong ones."""

from __future__ import annotations

import pytest

from hostseal.tpm import TctiInvalid, parse_tcti

VALID = {
    "device:/dev/tpmrm0": ("device", "/dev/tpmrm0"),
    "device:": ("device", "/dev/tpmrm0"),
    "swtpm:host=127.0.0.1,port=2321": ("swtpm", "host=127.0.0.1,port=2321"),
    "swtpm:port=4000": ("swtpm", "host=127.0.0.1,port=4000"),
    "mssim:host=localhost,port=2321": ("mssim", "host=localhost,port=2321"),
}

INVALID = {
    "tbs:": "Unknown TCTI 'tbs:'",
    "swtpm:port=abc": "port 'abc' is not a TCP port number",
    "swtpm:port=70000": "port '70000' is not a TCP port number",
    "swtpm:hots=1": "'hots=1' is not host=ADDRESS or port=NUMBER",
    "device:tpm0": "does not name a device path",
}


@pytest.mark.parametrize(("text", "expected"), VALID.items())
def test_valid(text: str, expected: tuple[str, str]) -> None:
    tcti = parse_tcti(text)
    assert (tcti.kind, tcti.config) == expected


@pytest.mark.parametrize(("text", "message"), INVALID.items())
def test_invalid_says_what_and_what_to_do(text: str, message: str) -> None:
    with pytest.raises(TctiInvalid) as err:
        parse_tcti(text)
    assert message in err.value.message
    assert "--tcti or HOSTSEAL_TCTI" in err.value.remedy
