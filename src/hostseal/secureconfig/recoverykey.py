"""Recovery keys as ESXi shows them: a Recovery ID (a GUID) and a Key of 16 groups of 6 digits.

Encoding (BitLocker's recovery-password scheme, stretched to 256 bits): the 32-byte secret is read
as 16 big-endian 16-bit values; group ``i`` (1-based) is ``value_i * 11`` written as 6 decimal
digits (``0 <= value_i * 11 <= 720885``). A group that is not divisible by 11, or is 720896
(= 65536 x 11) or more, is a typo, caught in that group. Since ``10**k`` is ``+1`` or ``-1``
modulo 11, changing any single digit by ``d`` (``1 <= |d| <= 9``) changes the group by a value that
is not divisible by 11: every single-digit typo is caught, and so is every swap of two different
adjacent digits (the change is ``9 * (a - b) * 10**k``).

The secret becomes a wrapping key with HKDF-SHA256 (see :func:`derive_recovery_wrapping_key`).

Pure: text and bytes in, values out (a new key draws its secret from ``os.urandom``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from uuid import UUID, uuid4

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hostseal.secureconfig.errors import (
    RECOVERY_KEY_GROUP_DIGITS,
    RECOVERY_KEY_GROUPS,
    RecoveryIdMalformed,
    RecoveryKeyMalformed,
    RecoveryKeyTypo,
)

RECOVERY_SECRET_BYTES = 32
"""A recovery secret is 256 random bits."""

RECOVERY_KDF_INFO = b"hostseal recovery-key wrapping key v1"
"""The fixed HKDF ``info`` string: separates this use of the secret from any other."""

_GROUP_FACTOR = 11
_GROUP_LIMIT = 65536 * _GROUP_FACTOR
_SEPARATORS = re.compile(r"[\s\-]+")
_DIGITS = re.compile(r"[0-9]+")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def format_recovery_key(secret: bytes) -> str:
    """The 32-byte ``secret`` as 16 dash-separated groups of 6 digits."""
    if len(secret) != RECOVERY_SECRET_BYTES:
        raise ValueError(f"a recovery secret is {RECOVERY_SECRET_BYTES} bytes, not {len(secret)}")
    groups = (
        int.from_bytes(secret[i : i + 2], "big") * _GROUP_FACTOR
        for i in range(0, RECOVERY_SECRET_BYTES, 2)
    )
    return "-".join(f"{g:0{RECOVERY_KEY_GROUP_DIGITS}d}" for g in groups)


def parse_recovery_key(text: str) -> bytes:
    """The 32-byte secret encoded by a recovery key as an operator typed it.

    Groups may be separated by dashes, spaces or newlines, in any mix; 96 digits without any
    separator are accepted too. Raises :class:`RecoveryKeyMalformed` when the shape is wrong (not
    16 groups, a group that is not 6 digits) and :class:`RecoveryKeyTypo` naming the first group
    that fails its check. Messages quote at most one faulty group of up to 7 characters, never
    the whole key.
    """
    tokens = [t for t in _SEPARATORS.split(text) if t]
    width = RECOVERY_KEY_GROUP_DIGITS
    if len(tokens) == 1 and len(tokens[0]) == RECOVERY_KEY_GROUPS * width:
        tokens = [tokens[0][i : i + width] for i in range(0, len(tokens[0]), width)]
    for number, token in enumerate(tokens, start=1):
        if not _DIGITS.fullmatch(token):
            bad = next(c for c in token if c not in "0123456789")
            raise RecoveryKeyMalformed(
                f"Recovery key group {number} contains {bad!r}, which is neither a digit nor a "
                "separator (dash, space or newline)."
            )
        if len(token) != width:
            # quote a short group only: a long one may be several groups of the secret
            shown = f" ({token!r})" if len(token) <= width + 1 else ""
            raise RecoveryKeyMalformed(
                f"Recovery key group {number}{shown} has {len(token)} digits, "
                f"but each group has {width}."
            )
    if len(tokens) != RECOVERY_KEY_GROUPS:
        raise RecoveryKeyMalformed(
            f"The recovery key has {len(tokens)} group{'' if len(tokens) == 1 else 's'}, "
            f"but {RECOVERY_KEY_GROUPS} groups of {width} digits are expected."
        )
    secret = bytearray()
    for number, token in enumerate(tokens, start=1):
        value = int(token)
        if value % _GROUP_FACTOR or value >= _GROUP_LIMIT:
            raise RecoveryKeyTypo(number, token)
        secret += (value // _GROUP_FACTOR).to_bytes(2, "big")
    return bytes(secret)


def format_recovery_id(recovery_id: UUID) -> str:
    """``{A860B8FF-F25C-4332-BD87-713890210EC6}``: upper case, in braces, as ESXi shows it."""
    return "{" + str(recovery_id).upper() + "}"


def parse_recovery_id(text: str) -> UUID:
    """A recovery ID typed with or without braces, in any case."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        stripped = stripped[1:-1].strip()
    if not _GUID.fullmatch(stripped):
        shown = text if len(text) <= 64 else text[:64] + "..."
        raise RecoveryIdMalformed(
            f"{shown!r} is not a recovery ID.",
            "A recovery ID is a GUID such as {A860B8FF-F25C-4332-BD87-713890210EC6}; "
            "braces and case do not matter.",
        )
    return UUID(stripped)


KCV_LABEL = b"hostseal recovery key check v1"


def key_check_value(recovery_id: UUID, secret: bytes) -> str:
    """A proof that someone holds a recovery key, without the key (see docs/api.md): the
    first 16 bytes of HMAC-SHA256(secret, label || recovery_id), hex. The agent reports one per
    recovery slot; the server compares it with the KCV of the key it escrowed."""
    if len(secret) != RECOVERY_SECRET_BYTES:
        raise ValueError(f"a recovery secret is {RECOVERY_SECRET_BYTES} bytes, not {len(secret)}")
    return hmac.new(secret, KCV_LABEL + recovery_id.bytes, hashlib.sha256).digest()[:16].hex()


def derive_recovery_wrapping_key(secret: bytes, salt: bytes) -> bytes:
    """The AES-256 key that wraps the data key in a recovery slot.

    HKDF-SHA256 with the slot's random ``salt`` and the fixed :data:`RECOVERY_KDF_INFO`. No slow
    (password) KDF is needed: the secret is 256 uniformly random bits, not something a person
    chose, so there is nothing to guess faster than 2**256 tries and stretching would add no
    security; HKDF only turns the secret into a key dedicated to this purpose, and the per-slot
    salt makes each slot's key different even if a secret were ever reused.
    """
    if len(secret) != RECOVERY_SECRET_BYTES:
        raise ValueError(f"a recovery secret is {RECOVERY_SECRET_BYTES} bytes, not {len(secret)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=RECOVERY_KDF_INFO)
    return hkdf.derive(secret)


class RecoveryKey:
    """A recovery ID and its 256-bit secret. ``repr()`` and ``str()`` never show the secret."""

    __slots__ = ("_recovery_id", "_secret")

    def __init__(self, recovery_id: UUID, secret: bytes) -> None:
        if len(secret) != RECOVERY_SECRET_BYTES:
            raise ValueError(
                f"a recovery secret is {RECOVERY_SECRET_BYTES} bytes, not {len(secret)}"
            )
        self._recovery_id = recovery_id
        self._secret = bytes(secret)

    @classmethod
    def generate(cls) -> RecoveryKey:
        """A new recovery key: a random (version 4) ID and 256 bits from the OS's CSPRNG."""
        return cls(uuid4(), os.urandom(RECOVERY_SECRET_BYTES))

    @classmethod
    def from_text(cls, recovery_id: str, key: str) -> RecoveryKey:
        """A recovery key from the two texts an operator saved."""
        return cls(parse_recovery_id(recovery_id), parse_recovery_key(key))

    @property
    def recovery_id(self) -> UUID:
        return self._recovery_id

    @property
    def secret(self) -> bytes:
        """The 32 secret bytes. Handle with care: this is the key."""
        return self._secret

    @property
    def formatted_id(self) -> str:
        """The Recovery ID as ESXi prints it, e.g. ``{A860B8FF-F25C-4332-BD87-713890210EC6}``."""
        return format_recovery_id(self._recovery_id)

    @property
    def formatted_key(self) -> str:
        """The Key as ESXi prints it: 16 groups of 6 digits joined by ``-``."""
        return format_recovery_key(self._secret)

    def __repr__(self) -> str:
        return f"RecoveryKey(recovery_id={self.formatted_id}, key=<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecoveryKey):
            return NotImplemented
        same_secret = hmac.compare_digest(self._secret, other._secret)
        return same_secret and self._recovery_id == other._recovery_id

    def __hash__(self) -> int:
        return hash(self._recovery_id)
