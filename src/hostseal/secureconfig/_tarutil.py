"""Small shared pieces for the two tar formats: bounded gunzip, deterministic members.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Iterable

TAR_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    OSError,
    ValueError,  # includes UnicodeError
    OverflowError,
)
"""What :mod:`tarfile` may raise on a malformed archive held in memory."""


class GunzipError(Exception):
    """The bytes are not one complete gzip stream within the size limit."""


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress exactly one gzip member, refusing more than ``limit`` bytes of output.

    The output bound is enforced while decompressing, so a small "gzip bomb" costs at most
    ``limit`` bytes of memory.
    """
    if data[:2] != b"\x1f\x8b":
        raise GunzipError("it does not start with the gzip signature")
    inflater = zlib.decompressobj(wbits=31)  # gzip header and trailer required
    try:
        # One call: zlib stops at limit + 1 bytes of output, so a "gzip bomb" costs at most
        # that; one call also means one output buffer, not pieces joined afterwards.
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise GunzipError(f"the gzip stream is damaged ({exc})") from None
    if len(out) > limit:
        raise GunzipError(f"it expands to more than {limit} bytes")
    if not inflater.eof:
        raise GunzipError("the gzip stream is truncated")
    if inflater.unused_data:
        raise GunzipError("there are bytes after the end of the gzip stream")
    return out


def gzip_deterministic(raw: bytes, compresslevel: int = 6) -> bytes:
    """``raw`` gzip'd with no name and mtime 0: the same input gives the same bytes."""
    return gzip.compress(raw, compresslevel=compresslevel, mtime=0)


def fixed_info(
    name: str, kind: bytes, mode: int, size: int = 0, linkname: str = ""
) -> tarfile.TarInfo:
    """A member header with fixed owner (0:0, no names) and mtime 0."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An uncompressed POSIX (pax) tar of ``members`` in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return buf.getvalue()
