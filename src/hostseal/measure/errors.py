"""Errors of :mod:`hostseal.measure`: a damaged or unexpected event log, and a replay mismatch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hostseal.errors import HostsealError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hostseal.measure.replay import PcrMismatch

DAMAGED_LOG_REMEDY = (
    "The event log is damaged or is not a TCG PC Client event log: read it again from "
    "/sys/kernel/security/tpm0/binary_bios_measurements (as root) and, if it still fails, "
    "report the file to the firmware or hostseal maintainers."
)


class EventLogError(HostsealError):
    """The event log could not be parsed, decoded or replayed.

    ``event_index`` and ``offset`` say where, when the problem is tied to one event (the index
    counts the header event as 0, as ``tpm2_eventlog`` does).
    """

    def __init__(
        self,
        message: str,
        remedy: str = DAMAGED_LOG_REMEDY,
        *,
        event_index: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message, remedy)
        self.event_index = event_index
        self.offset = offset

    @classmethod
    def at(
        cls, index: int, offset: int, what: str, remedy: str = DAMAGED_LOG_REMEDY
    ) -> EventLogError:
        """An error tied to one event: "event 12 at offset 0x4a0: <what>"."""
        return cls(
            f"Event log: event {index} at offset {offset} (0x{offset:x}): {what}.",
            remedy,
            event_index=index,
            offset=offset,
        )

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["event_index"] = self.event_index
        data["offset"] = self.offset
        return data


class EventLogReplayMismatch(EventLogError):
    """Replaying the event log does not give the PCR values the TPM holds (or quoted)."""

    def __init__(self, mismatches: Sequence[PcrMismatch]) -> None:
        names = ", ".join(f"{m.bank} PCR {m.pcr}" for m in mismatches)
        super().__init__(
            f"The event log does not match the TPM's PCR values: {names} differ "
            "from the replayed log.",
            "The log is incomplete or was altered, or events were extended without being "
            "logged. Read the log and the PCRs again from the same boot; if they still differ, "
            "do not trust this host's measurements until it has been rebooted and checked.",
        )
        self.mismatches = tuple(mismatches)

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["mismatches"] = [m.to_dict() for m in self.mismatches]
        return data
