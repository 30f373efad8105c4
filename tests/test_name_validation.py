"""Names that become paths are validated as whole strings (issue 12, item 14).

``re.match`` with a ``$``-anchored pattern accepts a trailing newline ("vm1\\n"), which then
becomes part of a directory or file name. Every validator of a name that becomes a path (lab
hosts, vTPMs, key providers, native key ids, host names at the server, knowledge-base languages)
is tried here with the same hostile names: one table, one test body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostseal import lab
from hostseal.doctor.knowledge import DEFAULT_LANGUAGE, negotiate
from hostseal.errors import HostsealError
from hostseal.keyprovider.base import check_name as check_provider_name
from hostseal.keyprovider.native import NativeProvider
from hostseal.server.hostnames import check_name as check_host_name
from hostseal.vtpm import VtpmDirs

HOSTILE = {
    "trailing newline": "a\n",
    "trailing CRLF": "a\r\n",
    "leading newline": "\na",
    "newline inside": "a\nb",
    "slash": "a/b",
    "parent": "..",
    "parent path": "../a",
    "dot": ".",
    "empty": "",
    "very long": "a" * 300,
    "NUL": "a\x00b",
    "trailing NUL": "a\x00",
    "space": "a b",
    "backslash": "a\\b",
}


@dataclass(frozen=True)
class Validator:
    check: Callable[[Path, str], object]
    refusal: str  # what the error message says about a refused name
    good: str = "host-1.a_b"
    shape: Callable[[str], str] = str  # a hostile name in this validator's alphabet


def _as_key_id(name: str) -> str:
    return name.replace("a", "0" * 32)  # "a\n" -> a valid key id and a newline


def _lab(root: Path, name: str) -> object:
    try:
        return lab.load(root, name)
    except lab.LabError as err:
        if "There is no lab host" in err.message:
            return None  # the name was accepted; there is just no such host
        raise


def _native_key_id(root: Path, key_id: str) -> object:
    provider = NativeProvider.create(root / "p", "p")
    return provider._key_path(key_id)


VALIDATORS = {
    "lab host": Validator(_lab, "is not a valid lab host name"),
    "vTPM (VM) name": Validator(
        lambda root, name: VtpmDirs(root / "v", root / "kp").vm(name),
        "is not a valid VM name for a vTPM",
    ),
    "key provider": Validator(
        lambda root, name: check_provider_name(name), "is not a valid key provider name"
    ),
    "native key id": Validator(
        _native_key_id,
        "is not a key id of the native key provider",
        good="0" * 32,
        shape=_as_key_id,
    ),
    "host name at the server": Validator(
        lambda root, name: check_host_name(name), "is not a host name"
    ),
}


@pytest.mark.parametrize("validator", VALIDATORS.values(), ids=list(VALIDATORS))
@pytest.mark.parametrize("name", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_names_are_refused(validator: Validator, name: str, tmp_path: Path) -> None:
    with pytest.raises(HostsealError) as err:
        validator.check(tmp_path, validator.shape(name))
    assert validator.refusal in err.value.message
    assert err.value.remedy


@pytest.mark.parametrize("validator", VALIDATORS.values(), ids=list(VALIDATORS))
def test_good_names_still_pass(validator: Validator, tmp_path: Path) -> None:
    validator.check(tmp_path, validator.good)


@pytest.mark.parametrize("language", ["de\n", "de-DE\n", "de\x00", "../de", "de/x"])
def test_hostile_language_tags_are_never_returned(language: str) -> None:
    tags = negotiate(language)
    assert tags in (["de"], [DEFAULT_LANGUAGE]), tags
