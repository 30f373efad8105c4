"""Recovery keys: ESXi's display format, BitLocker's per-group check, ID parsing."""

from __future__ import annotations

import re
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostseal.secureconfig import (
    RecoveryIdMalformed,
    RecoveryKey,
    RecoveryKeyMalformed,
    RecoveryKeyTypo,
    derive_recovery_wrapping_key,
    format_recovery_id,
    format_recovery_key,
    parse_recovery_id,
    parse_recovery_key,
)

KEY_SHAPE = re.compile(r"[0-9]{6}(-[0-9]{6}){15}")
FIXED_SECRET = bytes(range(32))


@given(st.binary(min_size=32, max_size=32))
def test_format_parse_round_trip(secret: bytes) -> None:
    text = format_recovery_key(secret)
    assert KEY_SHAPE.fullmatch(text)
    assert all(int(g) % 11 == 0 and int(g) < 65536 * 11 for g in text.split("-"))
    assert parse_recovery_key(text) == secret


def test_known_encoding() -> None:
    # bytes 00 01 -> 1 * 11 = 000011; bytes 1e 1f -> 7711 * 11 = 084821
    text = format_recovery_key(FIXED_SECRET)
    assert text.startswith("000011-")
    assert text.endswith("-084821")
    assert format_recovery_key(b"\xff" * 32) == "-".join(["720885"] * 16)


@pytest.mark.parametrize(
    "render",
    [
        lambda t: t.replace("-", " "),
        lambda t: t.replace("-", "\n"),
        lambda t: "  " + t.replace("-", " - ") + "\n",
        lambda t: t.replace("-", ""),
        lambda t: "\n".join(t[i : i + 27] for i in range(0, len(t), 28)),  # 4 groups a line
    ],
    ids=["spaces", "newlines", "padded", "no separators", "4 per line"],
)
def test_separators_accepted(render: object) -> None:
    text = format_recovery_key(FIXED_SECRET)
    assert callable(render)
    assert parse_recovery_key(render(text)) == FIXED_SECRET


def test_single_digit_change_always_changes_divisibility() -> None:
    # 10**k is +1 or -1 modulo 11, so d * 10**k with 1 <= |d| <= 9 is never a multiple of 11.
    assert all((d * 10**k) % 11 for k in range(6) for d in range(-9, 10) if d)


def test_every_digit_typo_is_caught_in_its_group() -> None:
    key = RecoveryKey.generate()
    text = key.formatted_key
    for pos, ch in enumerate(text):
        if ch == "-":
            continue
        group = pos // 7 + 1
        for digit in "0123456789":
            if digit == ch:
                continue
            typo = text[:pos] + digit + text[pos + 1 :]
            with pytest.raises(RecoveryKeyTypo) as err:
                parse_recovery_key(typo)
            assert err.value.group == group
            assert f"Recovery key group {group} (" in err.value.message


def test_adjacent_swaps_are_caught() -> None:
    text = format_recovery_key(bytes.fromhex("1234" * 16))  # 4660 * 11 = 051260
    assert text.split("-")[0] == "051260"
    swapped = "501260" + text[6:]
    with pytest.raises(RecoveryKeyTypo) as err:
        parse_recovery_key(swapped)
    assert err.value.group == 1


def test_typo_message_text() -> None:
    groups = format_recovery_key(FIXED_SECRET).split("-")
    groups[4] = "123457"
    with pytest.raises(RecoveryKeyTypo) as err:
        parse_recovery_key("-".join(groups))
    assert err.value.group == 5
    assert err.value.message == (
        "Recovery key group 5 ('123457') is not valid: check it for a typo. "
        "Each group is 6 digits and divisible by 11."
    )
    assert err.value.remedy == "Compare that group with the saved copy of the recovery key."
    # the rest of the key never appears in the error
    assert groups[0] not in str(err.value)


@pytest.mark.parametrize("group", ["720896", "999999"])  # divisible by 11, but >= 65536 * 11
def test_group_out_of_range_is_a_typo(group: str) -> None:
    assert int(group) % 11 == 0
    groups = format_recovery_key(FIXED_SECRET).split("-")
    groups[2] = group
    with pytest.raises(RecoveryKeyTypo) as err:
        parse_recovery_key("-".join(groups))
    assert err.value.group == 3


GOOD = format_recovery_key(FIXED_SECRET)

MALFORMED = {
    "empty": ("", "The recovery key has 0 groups, but 16 groups of 6 digits are expected."),
    "15 groups": (
        GOOD.rsplit("-", 1)[0],
        "The recovery key has 15 groups, but 16 groups of 6 digits are expected.",
    ),
    "17 groups": (
        GOOD + "-000011",
        "The recovery key has 17 groups, but 16 groups of 6 digits are expected.",
    ),
    "one group": ("000011", "The recovery key has 1 group, but 16 groups"),
    "5 digits": (
        GOOD.replace("000011", "00011", 1),
        "Recovery key group 1 ('00011') has 5 digits, but each group has 6.",
    ),
    "separator dropped": (
        GOOD.replace("-", "", 1),
        "Recovery key group 1 has 12 digits, but each group has 6.",
    ),
    "letter": (
        GOOD.replace("000011", "00O011", 1),
        "Recovery key group 1 contains 'O', which is neither a digit nor a separator "
        "(dash, space or newline).",
    ),
    "unicode digits": (
        GOOD.replace("000011", "\u0660\u0660\u0660\u0660\u0661\u0661", 1),
        "Recovery key group 1 contains '\u0660', which is neither a digit",
    ),
    "other separator": (
        GOOD.replace("-", "_"),
        "Recovery key group 1 contains '_', which is neither a digit",
    ),
    "7 digits": (
        GOOD.replace("000011", "0000111", 1),
        "Recovery key group 1 ('0000111') has 7 digits, but each group has 6.",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_keys(case: str) -> None:
    text, message = MALFORMED[case]
    with pytest.raises(RecoveryKeyMalformed) as err:
        parse_recovery_key(text)
    assert err.value.message.startswith(message)
    assert "16 groups of 6 digits" in err.value.remedy
    assert GOOD[7:20] not in str(err.value)  # never more than one group of the key is echoed


def test_recovery_id_format_and_parse() -> None:
    uid = UUID("a860b8ff-f25c-4332-bd87-713890210ec6")
    assert format_recovery_id(uid) == "{A860B8FF-F25C-4332-BD87-713890210EC6}"
    for text in (
        "{A860B8FF-F25C-4332-BD87-713890210EC6}",
        "A860B8FF-F25C-4332-BD87-713890210EC6",
        "{a860b8ff-f25c-4332-bd87-713890210ec6}",
        "  a860B8FF-f25c-4332-BD87-713890210ec6\n",
    ):
        assert parse_recovery_id(text) == uid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        "A860B8FF-F25C-4332-BD87-713890210EC",
        "{A860B8FF-F25C-4332-BD87-713890210EC6",
        "A860B8FFF25C4332BD87713890210EC6",
        "urn:uuid:a860b8ff-f25c-4332-bd87-713890210ec6",
        "{G860B8FF-F25C-4332-BD87-713890210EC6}",
    ],
)
def test_recovery_id_malformed(text: str) -> None:
    with pytest.raises(RecoveryIdMalformed) as err:
        parse_recovery_id(text)
    assert err.value.message == f"{text!r} is not a recovery ID."
    assert "{A860B8FF-F25C-4332-BD87-713890210EC6}" in err.value.remedy


def test_recovery_key_object() -> None:
    key = RecoveryKey.generate()
    assert len(key.secret) == 32
    assert key.recovery_id.version == 4
    assert key.formatted_id == format_recovery_id(key.recovery_id)
    for shown in (repr(key), str(key), f"{key}"):
        assert key.formatted_key not in shown
        assert key.formatted_key.split("-")[0] not in shown.replace(key.formatted_id, "")
        assert key.formatted_id in shown
        assert key.secret.hex() not in shown
    again = RecoveryKey.from_text(key.formatted_id.lower(), key.formatted_key.replace("-", " "))
    assert again == key
    assert hash(again) == hash(key)
    assert RecoveryKey.generate() != key
    with pytest.raises(ValueError, match="32 bytes"):
        RecoveryKey(key.recovery_id, b"short")


def test_wrapping_key_derivation() -> None:
    salt_a, salt_b = b"a" * 32, b"b" * 32
    k1 = derive_recovery_wrapping_key(FIXED_SECRET, salt_a)
    assert len(k1) == 32
    assert k1 == derive_recovery_wrapping_key(FIXED_SECRET, salt_a)
    assert k1 != derive_recovery_wrapping_key(FIXED_SECRET, salt_b)
    assert k1 != FIXED_SECRET
