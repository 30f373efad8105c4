"""The escrow server key and the envelope encryption of recovery keys.

The server key is 32 random bytes in ``<data dir>/server.key`` (mode 0600, created at first start
with :func:`~hostseal.fsutil.atomic_write`), never in the database: a copy of the database alone
does not reveal a single recovery key. Each escrowed key is encrypted with AES-256-GCM under a
fresh random data key; the data key is wrapped with AES-256-GCM under the server key. Both
encryptions bind the host name and the recovery ID as associated data, so a ciphertext moved to
another row does not decrypt.

File format: one line ``hostseal-server-key v1 <base64 of 32 bytes>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hostseal.fsutil import atomic_write
from hostseal.server.errors import ServerKeyError

_HEADER = "hostseal-server-key v1 "
_NONCE = 12


@dataclass(frozen=True)
class Sealed:
    wrapped_data_key: bytes
    ciphertext: bytes
    server_key_id: str


class ServerKey:
    """The key that wraps every escrow data key. ``repr`` shows only its id."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a server key is 32 bytes")
        self._key = key
        self.key_id = hashlib.sha256(b"hostseal server key id" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ServerKey(id={self.key_id})"

    def mac_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (HMAC of the purpose under the server key): every
        instance with the same server key derives the same one; it reveals nothing of the server
        key, and one purpose's key says nothing of another's."""
        return hmac.new(self._key, b"hostseal mac key|" + purpose.encode(), "sha256").digest()

    def seal(self, secret: bytes, context: bytes) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=256)
        n1, n2 = os.urandom(_NONCE), os.urandom(_NONCE)
        ciphertext = n1 + AESGCM(data_key).encrypt(n1, secret, context)
        wrapped = n2 + AESGCM(self._key).encrypt(n2, data_key, b"data key|" + context)
        return Sealed(wrapped, ciphertext, self.key_id)

    def open(self, sealed: Sealed, context: bytes) -> bytes:
        if sealed.server_key_id != self.key_id:
            raise ServerKeyError(
                f"This escrowed key was wrapped by server key {sealed.server_key_id}, but the "
                f"server key file holds key {self.key_id}.",
                "Restore the server.key file that was backed up with this database.",
            )
        try:
            w = sealed.wrapped_data_key
            data_key = AESGCM(self._key).decrypt(w[:_NONCE], w[_NONCE:], b"data key|" + context)
            c = sealed.ciphertext
            return AESGCM(data_key).decrypt(c[:_NONCE], c[_NONCE:], context)
        except InvalidTag as exc:
            raise ServerKeyError(
                "An escrowed key failed its integrity check: the database row was changed.",
                "Restore the database from a backup; the server key file is the right one.",
            ) from exc


def load_or_create(path: Path) -> ServerKey:
    """Read the server key; create it (mode 0600, atomically) when the file does not exist."""
    try:
        info = path.stat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = os.urandom(32)
        text = _HEADER + base64.b64encode(key).decode() + "\n"
        atomic_write(path, text.encode(), mode=0o600)
        return ServerKey(key)
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ServerKeyError(
            f"The server key {path} is readable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}).",
            f"Restrict it: chmod 600 {path}.",
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        if not text.startswith(_HEADER):
            raise ValueError
        key = base64.b64decode(text[len(_HEADER) :], validate=True)
        return ServerKey(key)
    except ValueError as exc:
        raise ServerKeyError(
            f"{path} is not a hostseal server key.",
            "Restore it from the backup taken with the database.",
        ) from exc
