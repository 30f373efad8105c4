"""A small, JSON-ready picture of a boot: what the operator and the attestation record need."""

from __future__ import annotations

from typing import Any

from hostseal.measure import decode
from hostseal.measure.errors import EventLogError
from hostseal.measure.events import EventLog
from hostseal.measure.replay import replay, replayable_banks


def summarize(log: EventLog) -> dict[str, Any]:
    """Banks, event count, Secure Boot state and databases, boot applications (path and sha256),
    kernel command line, firmware version and the replayed PCRs (sha256, else the log's first
    bank), as plain JSON types. Parts that cannot be decoded, or whose data does not match its
    measurement, are left empty and named in ``warnings``; replay errors are raised
    (:class:`EventLogError`). Boot application paths are never covered by a digest
    (``path_verified`` is false); ``kernel_cmdline_status`` says whether the command line is
    ``verified``, ``unverified`` (its digest is not over the text: the line is left empty) or
    ``forged``."""
    warnings: list[str] = []

    def attempt(what: str, function: Any) -> Any:
        try:
            return function()
        except EventLogError as err:
            warnings.append(f"{what}: {err.message}")
            return None

    banks = replayable_banks(log)
    bank = "sha256" if "sha256" in banks else (banks[0] if banks else None)
    pcrs = replay(log, [bank])[bank] if bank is not None else {}
    databases = attempt("Secure Boot databases", lambda: decode.secure_boot_databases(log)) or {}
    cmdlines = decode.kernel_cmdlines(log)
    cmdline_status = cmdlines[-1].binding.status if cmdlines else None
    if any(c.binding.forged for c in cmdlines):
        cmdline_status = "forged"
    cmdline = attempt("Kernel command line", lambda: decode.kernel_cmdline(log))
    return {
        "format": log.format,
        "banks": list(log.banks),
        "events": len(log.events),
        "secure_boot": attempt(
            "Secure Boot", lambda: decode.secure_boot_state(log, allow_empty=True)
        ),
        "secure_boot_databases": {
            name: {"certificates": db.certificates, "hashes": db.hashes}
            for name, db in databases.items()
        },
        "boot_applications": [
            {
                "pcr": app.event.pcr,
                "path": app.name,
                "path_verified": False,
                "sha256": app.digests["sha256"].hex() if "sha256" in app.digests else None,
            }
            for app in decode.boot_applications(log)
        ],
        "kernel_cmdline": cmdline,
        "kernel_cmdline_status": cmdline_status,
        "firmware_version": attempt("S-CRTM version", lambda: decode.scrtm_version(log)),
        "pcrs": {bank: {str(p): v.hex() for p, v in pcrs.items()}} if bank is not None else {},
        "warnings": warnings,
    }
