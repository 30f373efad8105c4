"""A minimal ASN.1 reader for X.509 certificates as TPM vendors issue them.

It reads definite-length BER, which is what certificates are even when they break DER's rules
(unsorted SET OF, an explicit DEFAULT value). ``cryptography`` refuses such certificates; this
reader keeps the exact bytes of every element, so that a signature is always checked over the
``tbsCertificate`` bytes as they were signed. Errors are :class:`DerError` (a ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
BOOLEAN = 0x01
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18


class DerError(ValueError):
    """The bytes are not the ASN.1 element expected."""


@dataclass(frozen=True, slots=True)
class Element:
    """One TLV: ``tag`` (the identifier octet), ``raw`` (the whole encoding), ``value``."""

    tag: int
    raw: bytes
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[Element]:
        if not self.constructed:
            raise DerError(f"element with tag 0x{self.tag:02x} is not constructed")
        items: list[Element] = []
        offset = 0
        while offset < len(self.value):
            item = read(self.value, offset)
            items.append(item)
            offset += len(item.raw)
        return items

    def expect(self, tag: int, what: str) -> Element:
        if self.tag != tag:
            raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self


def read(data: bytes, offset: int = 0) -> Element:
    """The element at ``offset`` (its ``raw`` ends where its length says)."""
    if offset + 2 > len(data):
        raise DerError(f"truncated element header at offset {offset}")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError(f"high tag numbers are not used in certificates (offset {offset})")
    first = data[offset + 1]
    header = 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError(f"indefinite length at offset {offset}")
    else:
        count = first & 0x7F
        if count > 4 or offset + 2 + count > len(data):
            raise DerError(f"bad length of {count} bytes at offset {offset}")
        length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
        header += count
    end = offset + header + length
    if end > len(data):
        raise DerError(
            f"element at offset {offset} claims {length} bytes, {len(data) - offset - header} "
            "are left"
        )
    return Element(tag, bytes(data[offset:end]), bytes(data[offset + header : end]))


def sequence(element: Element, what: str) -> list[Element]:
    return element.expect(SEQUENCE, what).children()


def oid(element: Element) -> str:
    """The dotted text of an OBJECT IDENTIFIER."""
    value = element.expect(OID, "object identifier").value
    if not value or value[-1] & 0x80:
        raise DerError("malformed object identifier")
    numbers: list[int] = []
    current = 0
    for byte in value:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            numbers.append(current)
            current = 0
    first = min(numbers[0] // 40, 2)
    return ".".join(str(n) for n in [first, numbers[0] - 40 * first, *numbers[1:]])


def integer(element: Element) -> int:
    value = element.expect(INTEGER, "integer").value
    if not value:
        raise DerError("empty integer")
    return int.from_bytes(value, "big", signed=True)


def boolean(element: Element) -> bool:
    value = element.expect(BOOLEAN, "boolean").value
    if len(value) != 1:
        raise DerError("malformed boolean")
    return value != b"\0"


def bit_string(element: Element) -> tuple[bytes, int]:
    """The bits of a BIT STRING and its number of unused bits."""
    value = element.expect(BIT_STRING, "bit string").value
    if not value or value[0] > 7:
        raise DerError("malformed bit string")
    return value[1:], value[0]


def time(element: Element) -> datetime:
    """A UTCTime or GeneralizedTime in UTC (``YYMMDDHHMM[SS]Z`` / ``YYYYMMDDHHMMSS[.f]Z``)."""
    text = element.value.decode("ascii", "replace")
    try:
        if element.tag == UTC_TIME:
            if not text.endswith("Z"):
                raise DerError(f"UTCTime without Z: {text!r}")
            body = text[:-1]
            stamp = datetime.strptime(body, "%y%m%d%H%M%S" if len(body) == 12 else "%y%m%d%H%M")
            # RFC 5280: YY >= 50 is 19YY, otherwise 20YY (strptime pivots at 69).
            year = stamp.year % 100
            stamp = stamp.replace(year=(1900 if year >= 50 else 2000) + year)
        elif element.tag == GENERALIZED_TIME:
            if not text.endswith("Z"):
                raise DerError(f"GeneralizedTime without Z: {text!r}")
            body = text[:-1].split(".")[0]
            stamp = datetime.strptime(body, "%Y%m%d%H%M%S")
        else:
            raise DerError(f"expected a time, found tag 0x{element.tag:02x}")
    except ValueError as err:
        if isinstance(err, DerError):
            raise
        raise DerError(f"malformed time {text!r}") from None
    return stamp.replace(tzinfo=UTC)


def text(element: Element) -> str:
    """A directory string (UTF8, Printable, IA5, T61, BMP, Universal) as text."""
    if element.tag == 0x1E:  # BMPString
        return element.value.decode("utf-16-be", "replace")
    if element.tag == 0x1C:  # UniversalString
        return element.value.decode("utf-32-be", "replace")
    if element.tag == 0x14:  # T61String: Latin-1 in practice
        return element.value.decode("latin-1")
    return element.value.decode("utf-8", "replace")


def sorted_set_of(elements: list[Element]) -> bool:
    """Whether a SET OF is in DER order (encodings ascending)."""
    encodings = [e.raw for e in elements]
    return encodings == sorted(encodings)
