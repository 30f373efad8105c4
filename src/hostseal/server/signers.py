"""Which host's AK signed a quote: an index, so that a bad signature costs at most one more check.

A quote (TPMS_ATTEST) names the key that signed it: ``qualifiedSigner``, the key's qualified
name, written by the TPM inside the signed structure. Once a quote has verified with a host's
AK, its ``qualifiedSigner`` is known to be that AK's: the index keeps it (one entry per host,
learned from every verified quote). When a quote sent for host A does not verify with A's AK,
its ``qualifiedSigner`` is looked up: only if the index names another host B is B's AK checked,
once, and a match is ``QuoteFromAnotherHost``. A signer the index does not hold (a key of no
host, or of a host that has not attested to this instance since it started) gives the plain
signature error: the server never tries every AK.
"""

from __future__ import annotations

import struct

LIMIT = 200_000  # entries (each a ~34-byte name and an int): forgotten all at once beyond
_HEAD = struct.Struct(">IHH")  # magic, type, the size of qualifiedSigner
_MAGIC = 0xFF544347  # TPM_GENERATED_VALUE


def signer_of(quote: bytes) -> bytes | None:
    """The quote's ``qualifiedSigner`` (unverified until the signature is), or None."""
    if len(quote) < _HEAD.size:
        return None
    magic, _, size = _HEAD.unpack_from(quote)
    if magic != _MAGIC or not 0 < size <= len(quote) - _HEAD.size:
        return None
    return quote[_HEAD.size : _HEAD.size + size]


class SignerIndex:
    """qualifiedSigner -> host id, from verified quotes only."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._hosts: dict[bytes, int] = {}

    def learn(self, quote: bytes, host_id: int) -> None:
        """Record the signer of ``quote``, which verified with the AK of ``host_id``."""
        signer = signer_of(quote)
        if signer is None or self._hosts.get(signer) == host_id:
            return
        if len(self._hosts) >= self.limit:
            self._hosts.clear()
        self._hosts[signer] = host_id

    def host_of(self, quote: bytes) -> int | None:
        """The host whose verified quotes carry this quote's signer, if any."""
        signer = signer_of(quote)
        return self._hosts.get(signer) if signer is not None else None
