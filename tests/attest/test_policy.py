"""Reference policies: strict JSON validation naming the field, refusal of policies that accept
everything or check PCRs they do not quote, and golden capture from lab and corpus boots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostseal.attest.errors import PolicyInvalid
from hostseal.attest.policy import (
    POLICY_FORMAT,
    AllowedApplication,
    ReferencePolicy,
    capture_policy,
)
from hostseal.lab.firmware import DEFAULT_CMDLINE, BootConfig, measure_boot
from hostseal.measure import EventLog, parse_event_log, replay

KEYLIME_LOGS = "keylime/test/data/create-mb-policy"
H32 = "ab" * 32


def lab_boot(**changes: object) -> tuple[EventLog, dict[str, dict[int, bytes]]]:
    """The lab firmware's log of a boot and its PCR values (what a verified quote gives)."""
    raw, _ = measure_boot(BootConfig().with_changes(**changes), ("sha1", "sha256"))
    log = parse_event_log(raw)
    return log, replay(log)


def minimal(**fields: object) -> dict[str, object]:
    """A valid policy, with ``fields`` changed (None removes a field)."""
    data: dict[str, object] = {
        "format": POLICY_FORMAT,
        "version": 1,
        "name": "secure-boot-only",
        "require_secure_boot": True,
        "quote_pcrs": [7],
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


# --- hand-written JSON -----------------------------------------------------------------------


@dataclass
class Bad:
    policy: object  # a dict (dumped to JSON) or raw text
    field: str | None
    message: str


BAD = {
    "not JSON": Bad("{name: x", None, "The reference policy is not valid JSON: "),
    "not an object": Bad([1, 2], None, "A reference policy is a JSON object."),
    "unknown field (typo)": Bad(
        minimal(pcr={}), "pcr", "Reference policy field 'pcr': unknown field (known: format, "
    ),
    "another format": Bad(
        minimal(format="keylime-mb-refstate"),
        "format",
        "Reference policy field 'format': expected 'hostseal-reference-policy', found "
        "'keylime-mb-refstate'.",
    ),
    "no version": Bad(
        minimal(version=None),
        "version",
        "Reference policy field 'version': missing (this hostseal writes version 1).",
    ),
    "version as text": Bad(
        minimal(version="1"),
        "version",
        "Reference policy field 'version': must be a positive integer, found '1'.",
    ),
    "newer version": Bad(
        minimal(version=2),
        "version",
        "Reference policy version 2 is newer than this hostseal understands (version 1).",
    ),
    "no name": Bad(minimal(name=None), "name", "Reference policy field 'name': missing or empty."),
    "blank name": Bad(
        minimal(name="  "), "name", "Reference policy field 'name': missing or empty."
    ),
    "unknown bank": Bad(
        minimal(pcrs={"md5": {}}),
        "pcrs.md5",
        "Reference policy field 'pcrs.md5': unknown PCR bank (known: sha1, sha256, ",
    ),
    "PCR 24": Bad(
        minimal(pcrs={"sha256": {"24": H32}}),
        "pcrs.sha256.24",
        "Reference policy field 'pcrs.sha256.24': '24' is not a PCR number (0-23).",
    ),
    "short digest": Bad(
        minimal(pcrs={"sha256": {"7": "ab" * 20}}),
        "pcrs.sha256.7",
        "Reference policy field 'pcrs.sha256.7': must be 32 bytes (64 hex digits), found 20.",
    ),
    "not hex": Bad(
        minimal(pcrs={"sha256": {"7": "zz" * 32}}),
        "pcrs.sha256.7",
        "Reference policy field 'pcrs.sha256.7': ",
    ),
    "pcrs as a list": Bad(
        minimal(pcrs=[H32]),
        "pcrs",
        'Reference policy field \'pcrs\': must be an object: {"sha256": {"0": "<hex>", ...}}.',
    ),
    "boot application without digest": Bad(
        minimal(boot_applications=[{"path": "\\EFI\\BOOT\\BOOTX64.EFI"}], quote_pcrs=[4, 7]),
        "boot_applications.0",
        "Reference policy field 'boot_applications.0': must be ",
    ),
    "boot application digest too short": Bad(
        minimal(boot_applications=["abcd"], quote_pcrs=[4, 7]),
        "boot_applications.0",
        "Reference policy field 'boot_applications.0': must be 32 bytes",
    ),
    "secure boot as text": Bad(
        minimal(require_secure_boot="yes"),
        "require_secure_boot",
        "Reference policy field 'require_secure_boot': must be true or false, found 'yes'.",
    ),
    "command lines as one string": Bad(
        minimal(kernel_cmdlines="ro quiet", quote_pcrs=[7, 8]),
        "kernel_cmdlines",
        "Reference policy field 'kernel_cmdlines': must be a list of strings.",
    ),
    "required setting of two words": Bad(
        minimal(kernel_cmdline_required=["ro quiet"], quote_pcrs=[7, 8]),
        "kernel_cmdline_required.0",
        "Reference policy field 'kernel_cmdline_required.0': 'ro quiet' must be one "
        "command-line word (like 'ro' or 'lockdown=integrity').",
    ),
    "PCR listed twice": Bad(
        minimal(quote_pcrs=[7, 7]),
        "quote_pcrs",
        "Reference policy field 'quote_pcrs': lists a PCR twice.",
    ),
    "PCR as a boolean": Bad(
        minimal(quote_pcrs=[True]),
        "quote_pcrs.0",
        "Reference policy field 'quote_pcrs.0': True is not a PCR number (0-23).",
    ),
    "unknown quote bank": Bad(
        minimal(quote_bank="sha999"),
        "quote_bank",
        "Reference policy field 'quote_bank': unknown PCR bank 'sha999'.",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_invalid_json_names_the_field(name: str) -> None:
    case = BAD[name]
    text = case.policy if isinstance(case.policy, str) else json.dumps(case.policy)
    with pytest.raises(PolicyInvalid) as info:
        ReferencePolicy.from_json(text)
    assert info.value.message.startswith(case.message), info.value.message
    assert info.value.field == case.field
    assert info.value.to_dict()["field"] == case.field
    assert info.value.remedy


REFUSED = {
    "empty": (
        minimal(require_secure_boot=None, quote_pcrs=None),
        None,
        "Reference policy 'secure-boot-only' checks nothing: it has no PCR values, no "
        "boot-application allow-list, no Secure Boot requirement and no kernel command-line "
        "rule, so every host would pass it.",
    ),
    "everything off, PCRs quoted": (
        minimal(require_secure_boot=False, pcrs={"sha256": {}}, quote_pcrs=[0, 7]),
        None,
        "Reference policy 'secure-boot-only' checks nothing: ",
    ),
    "a pinned PCR not quoted": (
        minimal(pcrs={"sha256": {"9": H32}}, quote_pcrs=[7]),
        "quote_pcrs",
        "Reference policy 'secure-boot-only' checks PCR 9 (a value the policy expects) but "
        "does not have the host quote it (quote_pcrs: [7]): an unquoted PCR, and the events in "
        "it, prove nothing.",
    ),
    "Secure Boot without PCR 7": (
        minimal(quote_pcrs=[0]),
        "quote_pcrs",
        "Reference policy 'secure-boot-only' checks PCR 7 (Secure Boot) but does not have the "
        "host quote it (quote_pcrs: [0])",
    ),
    "boot applications without PCR 4": (
        minimal(boot_applications=[H32]),
        "quote_pcrs",
        "Reference policy 'secure-boot-only' checks PCR 4 (boot applications) but ",
    ),
    "command line without PCR 8 or 12": (
        minimal(kernel_cmdlines=["ro"]),
        "quote_pcrs",
        "Reference policy 'secure-boot-only' checks PCR 8 or 12 (kernel command line) but ",
    ),
    "values of a bank not quoted": (
        minimal(pcrs={"sha1": {"0": "ab" * 20}}, quote_pcrs=[0, 7]),
        "pcrs.sha1",
        "Reference policy 'secure-boot-only' has sha1 PCR values but the host quotes the "
        "sha256 bank: those values could never be checked.",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_policies_that_check_nothing_or_unquoted_pcrs_are_refused(name: str) -> None:
    data, field, message = REFUSED[name]
    with pytest.raises(PolicyInvalid) as info:
        ReferencePolicy.from_json(json.dumps(data))
    assert info.value.message.startswith(message), info.value.message
    assert info.value.field == field
    if name == "empty":
        assert info.value.remedy.startswith("Capture the policy from a known-good host")


def test_refused_when_built_in_code_too() -> None:
    with pytest.raises(PolicyInvalid, match="checks nothing"):
        ReferencePolicy(name="accept-all")
    with pytest.raises(PolicyInvalid, match=r"quote_pcrs: \[\]"):
        ReferencePolicy(name="sb", require_secure_boot=True)


def test_valid_json_round_trips() -> None:
    text = json.dumps(
        minimal(
            description="hand-written",
            pcrs={"sha256": {"0": "0x" + H32, "7": H32.upper()}},
            boot_applications=[H32, {"sha256": "cd" * 32, "path": "\\EFI\\x.efi"}],
            kernel_cmdlines=["ro quiet"],
            kernel_cmdline_required=["lockdown=integrity"],
            quote_pcrs=[0, 4, 7, 8],
        )
    )
    policy = ReferencePolicy.from_json(text)
    assert policy.pcrs == {"sha256": {0: bytes.fromhex(H32), 7: bytes.fromhex(H32)}}
    assert policy.boot_applications == (
        AllowedApplication(bytes.fromhex(H32)),
        AllowedApplication(bytes.fromhex("cd" * 32), "\\EFI\\x.efi"),
    )
    assert policy.quote_pcrs == (0, 4, 7, 8) and policy.quote_bank == "sha256"
    assert ReferencePolicy.from_json(policy.to_json()) == policy
    assert json.loads(policy.to_json())["format"] == POLICY_FORMAT


def test_policy_keeps_its_own_copy_of_the_values() -> None:
    values = {0: bytes(32)}
    policy = ReferencePolicy("p", pcrs={"sha256": values}, quote_pcrs=(0,))
    values[0] = b"\xff" * 32
    assert policy.pcrs["sha256"][0] == bytes(32)


# --- capture ---------------------------------------------------------------------------------


def test_capture_from_a_lab_boot() -> None:
    log, pcrs = lab_boot()
    policy = capture_policy("lab-golden", log, pcrs)
    assert policy.pcrs == {"sha256": {p: pcrs["sha256"][p] for p in (0, 2, 7)}}
    assert [app.path for app in policy.boot_applications] == [
        "\\EFI\\debian\\shimx64.efi",
        "\\EFI\\debian\\grubx64.efi",
        "\\vmlinuz",
    ]
    assert policy.require_secure_boot is True
    assert policy.kernel_cmdlines == (DEFAULT_CMDLINE,)
    assert policy.quote_pcrs == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert ReferencePolicy.from_json(policy.to_json()) == policy


def test_capture_options_and_errors() -> None:
    log, pcrs = lab_boot(secure_boot=False)
    policy = capture_policy("pcrs", log, pcrs, bank="sha1", pin_pcrs=(0, 4), quote_pcrs=(0, 4, 8))
    assert policy.require_secure_boot is False
    assert policy.quote_bank == "sha1" and set(policy.pcrs["sha1"]) == {0, 4}
    only_values = capture_policy("no-log", None, pcrs)
    assert (only_values.quote_pcrs, only_values.boot_applications) == ((0, 2, 7), ())

    with pytest.raises(PolicyInvalid) as info:
        capture_policy("x", log, {"sha1": pcrs["sha1"]})
    assert info.value.message == (
        "Cannot capture a policy: the host's PCR values have no sha256 bank (banks: sha1)."
    )
    with pytest.raises(PolicyInvalid) as info:
        capture_policy("x", log, pcrs, pin_pcrs=(0, 15))
    assert info.value.message == (
        "Cannot capture a policy: sha256 PCR 15 is not among the host's PCR values."
    )
    assert info.value.field == "pcrs.sha256.15"
    with pytest.raises(PolicyInvalid, match="checks nothing"):
        capture_policy("x", None, pcrs, pin_pcrs=())


@pytest.mark.corpus
@pytest.mark.parametrize(
    "log_name, secure_boot, apps",
    [
        ("binary_bios_measurements-secureboot", True, 3),
        ("binary_bios_measurements", False, 3),
    ],
)
def test_capture_from_corpus_logs(
    corpus: Path, log_name: str, secure_boot: bool, apps: int
) -> None:
    log = parse_event_log((corpus / KEYLIME_LOGS / log_name).read_bytes())
    policy = capture_policy("keylime", log, replay(log))
    assert policy.require_secure_boot is secure_boot
    assert len(policy.boot_applications) == apps
    assert policy.quote_pcrs == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)
    assert policy.kernel_cmdlines and "vmlinuz" in policy.kernel_cmdlines[0]
