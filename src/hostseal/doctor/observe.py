"""Gather what ``hostseal doctor`` looks at: the TPM, this boot's event log, the sealed
configuration, the agent's state. Reads only; the one TPM operation beyond reading is the
unlock probe described in :mod:`hostseal.doctor.preflight`.

Every failure is recorded, not raised, so that one missing piece (no TPM, no bundle, no event
log) still leaves the other checks to report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hostseal import hostinfo
from hostseal.agent.state import AgentState
from hostseal.doctor.preflight import (
    NOT_APPLICABLE,
    PROBE_OK,
    PROBE_POLICY,
    PROBE_WRONG_TPM,
    Preflight,
    Probe,
    assess,
)
from hostseal.errors import HostsealError
from hostseal.measure import EventLog, PcrMismatch, compare_pcrs, parse_event_log
from hostseal.secureconfig.slots import TpmSlot
from hostseal.secureconfig.store import Bundle, NoBundle, Store
from hostseal.tpm import Tpm, TpmError, open_tpm
from hostseal.tpm.seal import PolicyNotSatisfied, SealedBlob, SealedObjectWrongTpm, unseal

BANK = "sha256"


@dataclass
class AgentRecord:
    """What the agent's state directory holds (no secret is read)."""

    path: Path
    exists: bool = False
    enrolled: bool = False
    escrowed: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class HostState:
    """Everything observed, with the reason wherever something could not be observed."""

    tcti: str
    eventlog: Path
    bootbank: Path
    tpm_error: HostsealError | None = None
    host: hostinfo.HostInfo | None = None
    ek_fingerprint: str | None = None
    boot: EventLog | None = None
    boot_error: str | None = None
    boot_absent: bool = False  # this boot left no event log (hostinfo.NoEventLog)
    log_mismatches: list[PcrMismatch] | None = None
    bundle: Bundle | None = None
    bundle_error: HostsealError | None = None
    current_pcrs: dict[int, bytes] | None = None
    preflight: Preflight = field(default_factory=lambda: Preflight(NOT_APPLICABLE))
    agent: AgentRecord = field(default_factory=lambda: AgentRecord(Path()))
    audit: list[dict[str, object]] = field(default_factory=list)


def observe(
    tcti: str, eventlog: Path, bootbank: Path, agent_dir: Path, *, probe: bool = True
) -> HostState:
    """Look at the host. ``probe=False`` never asks the TPM to unseal (see preflight)."""
    state = HostState(tcti, eventlog, bootbank)
    _read_boot(state)
    _read_bundle(state)
    state.agent = read_agent(agent_dir)
    try:
        with open_tpm(tcti) as tpm:
            _read_tpm(state, tpm)
            state.preflight = _assess(state)
            slot = _slot(state)
            if probe and state.preflight.will_unlock and slot is not None:
                state.preflight = _assess(state, _probe(tpm, slot))
    except HostsealError as err:
        state.tpm_error = state.tpm_error or err
        state.preflight = _assess(state)
    return state


def _assess(state: HostState, probe: Probe | None = None) -> Preflight:
    return assess(
        state.bundle,
        tpm_error=state.tpm_error,
        ek_fingerprint=state.ek_fingerprint,
        current_pcrs=state.current_pcrs,
        boot=state.boot,
        boot_error=state.boot_error,
        probe=probe,
    )


def _slot(state: HostState) -> TpmSlot | None:
    return state.bundle.info.tpm_slot if state.bundle is not None else None


def _read_boot(state: HostState) -> None:
    try:
        raw = hostinfo.read_eventlog(state.eventlog)
    except hostinfo.NoEventLog as err:
        state.boot_error, state.boot_absent = err.message, True
        return
    except HostsealError as err:
        state.boot_error = err.message
        return
    try:
        state.boot = parse_event_log(raw)
    except HostsealError as err:
        state.boot_error = f"{state.eventlog} does not parse: {err.message}"


def _read_bundle(state: HostState) -> None:
    store = Store(state.bootbank)
    try:
        state.bundle = store.load()
    except NoBundle as err:
        state.bundle_error = err
        return
    except HostsealError as err:
        state.bundle_error = err
    try:
        state.audit = store.audit_records()
    except (OSError, ValueError):
        state.audit = []


def read_agent(path: Path) -> AgentRecord:
    """The agent's enrolment and escrow record, from its state directory."""
    record = AgentRecord(path, exists=path.is_dir())
    if not record.exists:
        return record
    agent = AgentState(path)
    try:
        record.enrolled = agent.load_ak() is not None and agent.token() is not None
        record.escrowed = agent.escrowed()
    except (OSError, ValueError, KeyError) as err:
        record.problem = f"the agent's state in {path} is unreadable ({err})"
    return record


def _read_tpm(state: HostState, tpm: Tpm) -> None:
    state.host = hostinfo.collect(tpm, state.eventlog)
    if not state.host.tpm.sha256_active:
        return
    if state.boot is not None:
        touched = sorted({e.pcr for e in state.boot.events if e.pcr < 24})
        try:
            state.log_mismatches = compare_pcrs(state.boot, {BANK: tpm.pcr_read(BANK, touched)})
        except HostsealError as err:
            state.boot_error = f"the event log cannot be compared with the TPM: {err.message}"
    slot = _slot(state)
    if slot is None:
        return
    state.ek_fingerprint = tpm.ek_fingerprint()
    state.current_pcrs = tpm.pcr_read(slot.pcr_bank, slot.pcrs) if slot.pcrs else {}


def _probe(tpm: Tpm, slot: TpmSlot) -> Probe:
    """Ask the TPM to unseal as an unlock would; the key is dropped at once, never kept."""
    blob = SealedBlob(
        slot.sealed_public,
        slot.sealed_private,
        slot.pcr_bank,
        tuple(slot.pcrs),
        slot.policy_digest,
    )
    try:
        unseal(tpm, blob)
    except SealedObjectWrongTpm:
        return Probe(PROBE_WRONG_TPM)
    except PolicyNotSatisfied:
        return Probe(PROBE_POLICY)
    except TpmError as err:
        return Probe("error", err)
    return Probe(PROBE_OK)


def audit_listings(audit: list[dict[str, object]]) -> dict[str, str]:
    """Recovery ID -> the last time ``hostseal recovery list`` showed it to a person (from the
    audit log; the agent's reads for escrow are not a person seeing the key)."""
    shown: dict[str, str] = {}
    for record in audit:
        if record.get("action") != "recovery.list" or record.get("reader") == "agent":
            continue
        ids = record.get("recovery_ids")
        if isinstance(ids, list):
            for recovery_id in ids:
                shown[str(recovery_id)] = str(record.get("time", "?"))
    return shown
