"""Write crypto-agile event logs (the lab's simulated firmware uses this).

Each ``add`` returns the digests the caller must extend into the TPM, so the log and the PCRs
stay in step::

    w = EventLogWriter(banks=("sha1", "sha256"))
    digests = w.add(pcr=7, event_type=EventType.EV_SEPARATOR, data=SEPARATOR_DATA)
    raw = w.to_bytes()
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping

from hostseal.measure.events import ALGORITHMS_BY_NAME, EventType, hash_function
from hostseal.measure.parse import PCR_COUNT, SPEC_ID_SIGNATURE, STARTUP_LOCALITY_SIGNATURE


class EventLogWriter:
    """Builds a TCG crypto-agile log: the Spec ID Event03 header, then TCG_PCR_EVENT2 records."""

    def __init__(self, banks: Iterable[str] = ("sha1", "sha256")) -> None:
        self.banks = tuple(banks)
        if not self.banks:
            raise ValueError("an event log needs at least one PCR bank")
        if len(set(self.banks)) != len(self.banks):
            raise ValueError(f"PCR banks repeat: {self.banks}")
        self._algorithms = []
        for bank in self.banks:
            alg = ALGORITHMS_BY_NAME.get(bank)
            if alg is None:
                known = ", ".join(ALGORITHMS_BY_NAME)
                raise ValueError(f"unknown PCR bank {bank!r} (known: {known})")
            hash_function(bank)  # raises if this bank cannot be computed here (SM3)
            self._algorithms.append(alg)
        self._parts: list[bytes] = [self._header()]
        self._digest_format = struct.Struct(
            "<III" + "".join(f"H{a.size}s" for a in self._algorithms)
        )
        self._pcr0_extended = False
        self.count = 1  # events written, the header included

    def _header(self) -> bytes:
        sizes = b"".join(struct.pack("<HH", a.alg_id, a.size) for a in self._algorithms)
        spec_id = (
            SPEC_ID_SIGNATURE
            + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(self._algorithms))  # platform class 0,
            + sizes  # spec 2.0 errata 0, UINTN 64-bit
            + b"\0"  # no vendor information
        )
        return struct.pack("<II20sI", 0, EventType.EV_NO_ACTION, bytes(20), len(spec_id)) + spec_id

    def add(
        self,
        pcr: int,
        event_type: int,
        data: bytes,
        *,
        digests: Mapping[str, bytes] | None = None,
        digest_data: bytes | None = None,
    ) -> dict[str, bytes]:
        """Log an event and return its digests (bank -> digest) to extend into ``pcr``.

        The digest is ``H(data)`` per bank, ``H(digest_data)`` when given (e.g. GRUB logs
        "kernel_cmdline: ..." but measures the command line alone), or ``digests`` as given
        (e.g. an image's Authenticode hash), which must then cover every bank of the log.
        """
        if not 0 <= pcr < PCR_COUNT:
            raise ValueError(f"PCR {pcr} does not exist on a PC Client TPM (0-23)")
        if event_type == EventType.EV_NO_ACTION:
            raise ValueError("use add_no_action() for EV_NO_ACTION events")
        if digests is not None and digest_data is not None:
            raise ValueError("give digests or digest_data, not both")
        if digests is not None:
            result = self._checked(digests)
        else:
            source = data if digest_data is None else digest_data
            result = {bank: hash_function(bank)(source) for bank in self.banks}
        self._write(pcr, event_type, result, data)
        if pcr == 0:
            self._pcr0_extended = True
        return result

    def add_no_action(self, data: bytes) -> dict[str, bytes]:
        """Log an EV_NO_ACTION event on PCR 0 with zero digests; it is not extended."""
        if data.startswith(STARTUP_LOCALITY_SIGNATURE) and self._pcr0_extended:
            raise ValueError("a StartupLocality event must come before PCR 0 is extended")
        zero = {a.name: bytes(a.size) for a in self._algorithms}
        self._write(0, EventType.EV_NO_ACTION, zero, data)
        return zero

    def add_startup_locality(self, locality: int) -> None:
        """Log the StartupLocality event: PCR 0 starts at ``00..0<locality>``."""
        if locality not in (0, 3, 4):
            raise ValueError("StartupLocality is 0, 3 or 4 (4: H-CRTM)")
        self.add_no_action(STARTUP_LOCALITY_SIGNATURE + bytes((locality,)))

    def _checked(self, digests: Mapping[str, bytes]) -> dict[str, bytes]:
        missing = [b for b in self.banks if b not in digests]
        extra = [b for b in digests if b not in self.banks]
        if missing or extra:
            raise ValueError(
                f"digests must cover exactly the banks {self.banks}: missing {missing}, "
                f"extra {extra}"
            )
        result: dict[str, bytes] = {}
        for alg in self._algorithms:
            digest = bytes(digests[alg.name])
            if len(digest) != alg.size:
                raise ValueError(f"a {alg.name} digest is {alg.size} bytes, got {len(digest)}")
            result[alg.name] = digest
        return result

    def _write(self, pcr: int, event_type: int, digests: dict[str, bytes], data: bytes) -> None:
        values: list[int | bytes] = [pcr, int(event_type), len(self._algorithms)]
        for alg in self._algorithms:
            values += [alg.alg_id, digests[alg.name]]
        self._parts.append(self._digest_format.pack(*values))
        self._parts.append(struct.pack("<I", len(data)))
        self._parts.append(bytes(data))
        self.count += 1

    def to_bytes(self) -> bytes:
        """The log so far, as the kernel would expose it (binary_bios_measurements)."""
        return b"".join(self._parts)
