"""``state.tgz``: the file in the boot bank holding ``encryption.info`` and ``local.tgz.ve``.

A gzip'd POSIX tar with regular-file members only, in this order: ``encryption.info``,
``local.tgz.ve``, then extras (by default only ``seal-eventlog.bin``, the measured-boot event log
recorded at seal time) sorted by name. Member metadata is fixed (mode 0600, owner 0:0, mtime 0),
so equal inputs give equal bytes.

Reading is hardened against hostile files: one gzip stream with a bounded expanded size, only the
known member names, each once, regular files only, per-member size limits.

Pure: bytes in, values out (and back).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from types import MappingProxyType

from hostseal.secureconfig._tarutil import (
    TAR_ERRORS,
    GunzipError,
    fixed_info,
    gunzip_limited,
    gzip_deterministic,
    write_tar,
)
from hostseal.secureconfig.errors import BundleCorrupt
from hostseal.secureconfig.info import MAX_INFO_BYTES, EncryptionInfo

INFO_MEMBER = "encryption.info"
PAYLOAD_MEMBER = "local.tgz.ve"
SEAL_EVENTLOG_MEMBER = "seal-eventlog.bin"
RECOVERY_KEYS_MEMBER = "recovery-keys.ve"
"""The recovery keys themselves, encrypted under the data key (shown by ``recovery list``)."""
EXTRA_MEMBERS: frozenset[str] = frozenset({SEAL_EVENTLOG_MEMBER, RECOVERY_KEYS_MEMBER})
"""The extra member names written and read by default."""

MAX_PAYLOAD_BYTES = 256 << 20
MAX_EXTRA_BYTES = 64 << 20
MAX_STATE_BYTES = MAX_INFO_BYTES + MAX_PAYLOAD_BYTES + 4 * MAX_EXTRA_BYTES
"""The largest expanded ``state.tgz`` read."""

_NO_EXTRAS: Mapping[str, bytes] = MappingProxyType({})


def build_state_tgz(
    info: EncryptionInfo,
    payload: bytes,
    extra: Mapping[str, bytes] = _NO_EXTRAS,
    *,
    allowed_extras: frozenset[str] = EXTRA_MEMBERS,
) -> bytes:
    """The bytes of ``state.tgz``; ``extra`` names must be in ``allowed_extras``."""
    for name in extra:
        if name not in allowed_extras:
            raise ValueError(f"{name!r} is not an allowed state.tgz member")
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, data in [
        (INFO_MEMBER, info.to_json()),
        (PAYLOAD_MEMBER, payload),
        *sorted(extra.items()),
    ]:
        members.append((fixed_info(name, tarfile.REGTYPE, 0o600, size=len(data)), data))
    # Stored (level 0): state.tgz holds ciphertext, which no compression level shrinks.
    return gzip_deterministic(write_tar(members), compresslevel=0)


def _limit(name: str) -> int:
    if name == INFO_MEMBER:
        return MAX_INFO_BYTES
    if name == PAYLOAD_MEMBER:
        return MAX_PAYLOAD_BYTES
    return MAX_EXTRA_BYTES


def read_state_tgz(
    data: bytes, *, allowed_extras: frozenset[str] = EXTRA_MEMBERS
) -> tuple[EncryptionInfo, memoryview, dict[str, bytes]]:
    """``(info, local.tgz.ve, extras)`` from ``state.tgz``; problems: :class:`BundleCorrupt`.

    The payload is returned as stored (still encrypted) and as a view into the expanded file,
    not a copy: it is most of the file and is read once, by :func:`decrypt_payload`.
    """
    try:
        raw = gunzip_limited(data, MAX_STATE_BYTES)
    except GunzipError as exc:
        raise BundleCorrupt(f"state.tgz is not a valid gzip file: {exc}.") from None
    known = {INFO_MEMBER, PAYLOAD_MEMBER} | allowed_extras
    spans: dict[str, tuple[int, int]] = {}  # member name -> where its bytes are in ``raw``
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                name = member.name
                if name not in known:
                    raise BundleCorrupt(
                        f"state.tgz holds an unexpected member {name[:100]!r}; it holds only "
                        f"{', '.join(sorted(known))}."
                    )
                if name in spans:
                    raise BundleCorrupt(f"state.tgz holds the member {name!r} twice.")
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise BundleCorrupt(f"state.tgz member {name!r} is not a regular file.")
                if member.size > _limit(name):
                    raise BundleCorrupt(
                        f"state.tgz member {name!r} is {member.size} bytes, more than the "
                        f"{_limit(name)} allowed."
                    )
                if member.offset_data + member.size > len(raw):
                    raise BundleCorrupt(f"state.tgz is truncated inside the member {name!r}.")
                spans[name] = (member.offset_data, member.offset_data + member.size)
    except TAR_ERRORS as exc:
        raise BundleCorrupt(f"state.tgz is not a valid tar archive ({exc}).") from None
    for required in (INFO_MEMBER, PAYLOAD_MEMBER):
        if required not in spans:
            raise BundleCorrupt(f"state.tgz has no {required!r} member.")
    view = memoryview(raw)
    info = EncryptionInfo.from_json(raw[slice(*spans.pop(INFO_MEMBER))])
    payload = view[slice(*spans.pop(PAYLOAD_MEMBER))]
    extras = {name: raw[start:end] for name, (start, end) in spans.items()}
    return info, payload, extras
