"""Fuzzing the policy loader: any JSON, and mutations of a valid policy, give a policy or
:class:`PolicyInvalid`, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostseal.attest.errors import PolicyInvalid
from hostseal.attest.policy import ReferencePolicy

pytestmark = pytest.mark.fuzz

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = {
    "format": "hostseal-reference-policy",
    "version": 1,
    "name": "p",
    "pcrs": {"sha256": {"0": "00" * 32, "7": "11" * 32}},
    "boot_applications": ["22" * 32, {"sha256": "33" * 32, "path": "\\EFI\\x.efi"}],
    "require_secure_boot": True,
    "kernel_cmdlines": ["ro"],
    "kernel_cmdline_required": ["ro"],
    "quote_bank": "sha256",
    "quote_pcrs": [0, 4, 7, 8],
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def load(text: str | bytes) -> None:
    try:
        policy = ReferencePolicy.from_json(text)
    except PolicyInvalid as err:
        assert err.message and err.remedy
        return
    assert ReferencePolicy.from_json(policy.to_json()) == policy


@FUZZ
@given(JSON)
def test_any_json(value: object) -> None:
    load(json.dumps(value))


@FUZZ
@given(st.sampled_from(sorted(VALID)), JSON)
def test_one_field_replaced(key: str, value: object) -> None:
    load(json.dumps({**VALID, key: value}))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    load(raw)


def test_the_fuzzed_policy_is_valid() -> None:
    assert ReferencePolicy.from_json(json.dumps(VALID)).name == "p"
