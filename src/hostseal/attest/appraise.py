"""Appraisal: a quote verified and judged by a reference policy, and that judgement reused for
evidence of a boot that was already judged.

A verdict is a function of three things: the policy, the quoted PCR values and the event log. The
TPM signs the PCR values' digest (``pcrDigest``) together with the verifier's nonce. Once a full
appraisal has replayed a log to those values and evaluated the policy, evidence of the same boot
(the same PCR selection and ``pcrDigest``, the same log, the same policy) has the same verdict:
only the signature, the nonce and the PCR digest need checking again. That is the steady state
of a fleet (agents report every few minutes; hosts reboot rarely), so the cost per attestation
falls from a log parse and replay to about one signature check.

:func:`appraisal_key` binds the four inputs (policy digest, selection, pcrDigest with its hash,
event log SHA-256) in one SHA-256. A caller keeps the key and outcome of a host's last full
appraisal (:class:`Judged`) and passes it back; on any difference the evidence is appraised in full.
A caller that holds the log and sends only its digest first asks without the log: when the judgement
cannot be reused, :class:`EventLogUnavailable` says the log is needed, and the caller asks again
with its bytes. Reuse never skips a check of the quote itself (its signature by the AK, its nonce):
only then is the key computed from what the TPM signed. The PCR values presented with the quote are
checked against its pcrDigest only when the evidence is appraised in full: on reuse they are not
needed (the judged values hashed to that same signed digest).

>>> a = appraise(ak, attest, sig, nonce=n, pcrs=values, policy=p, eventlog=log)  # doctest: +SKIP
>>> b = appraise(ak, attest2, sig2, nonce=n2, pcrs=values, policy=p,
...              eventlog_sha256=a.eventlog_sha256, judged=a.judged)          # doctest: +SKIP
>>> b.reused                                                                  # doctest: +SKIP
True
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from hostseal.attest.errors import QuoteEventLogMismatch
from hostseal.attest.policy import ReferencePolicy
from hostseal.attest.quote import Quote, check_pcr_values, verify_signed_quote
from hostseal.attest.tpm_structures import PcrSelection
from hostseal.attest.tpmkey import AkPublic
from hostseal.attest.verdict import Verdict, VerdictStatus, evaluate
from hostseal.errors import HostsealError
from hostseal.measure import EventLog, compare_pcrs, parse_event_log

_KEY_LABEL = b"hostseal appraisal v1"


class EventLogUnavailable(HostsealError):
    """Evidence named an event log by its digest, and no log with that digest is at hand."""


@dataclass(frozen=True, slots=True)
class Judged:
    """A host's last full appraisal: its :func:`appraisal_key` and its outcome."""

    key: str
    status: VerdictStatus
    messages: tuple[str, ...]


@dataclass(slots=True)  # not frozen: made for every attestation, and frozen costs per field
class Appraisal:
    """The outcome of :func:`appraise`. ``verdict`` is the policy's full verdict (findings
    included) and ``pcrs`` the verified PCR values when the evidence was appraised in full;
    None and empty when a judgement was reused (the values are the judged ones). ``key`` is
    None for a quote verified without a policy (nothing was judged: no judgement to reuse)."""

    status: VerdictStatus
    messages: tuple[str, ...]
    key: str | None
    quote: Quote
    pcrs: dict[str, dict[int, bytes]]
    eventlog_sha256: str | None
    eventlog: EventLog | None
    verdict: Verdict | None
    reused: bool

    @property
    def judged(self) -> Judged | None:
        return Judged(self.key, self.status, self.messages) if self.key is not None else None


def policy_digest(policy: ReferencePolicy) -> str:
    """SHA-256 (hex) of the policy's canonical JSON: changes whenever the policy does."""
    return hashlib.sha256(policy.to_json().encode()).hexdigest()


def appraisal_key(
    policy_digest: str, quote: Quote, hash_name: str, eventlog_sha256: str | None
) -> str:
    """What a verdict depends on, in one SHA-256 (hex): the policy, the quoted PCR selection and
    pcrDigest (with the hash it was computed with) and the event log."""
    return hashlib.sha256(
        b"\0".join(
            (
                _KEY_LABEL,
                policy_digest.encode(),
                hash_name.encode(),
                _selection_text(quote.selection),
                quote.pcr_digest,
                (eventlog_sha256 or "-").encode(),
            )
        )
    ).hexdigest()


@functools.lru_cache(maxsize=256)
def _selection_text(selection: tuple[PcrSelection, ...]) -> bytes:
    return ";".join(f"{sel.bank}:{','.join(map(str, sel.pcrs))}" for sel in selection).encode()


def appraise(
    ak: AkPublic,
    attest: bytes,
    signature: bytes,
    *,
    nonce: bytes,
    pcrs: Mapping[str, Mapping[int, bytes]],
    policy: ReferencePolicy,
    policy_sha256: str | None = None,
    eventlog: bytes | None = None,
    eventlog_sha256: str | None = None,
    judged: Judged | None = None,
) -> Appraisal:
    """Verify a quote (signature, nonce, PCR selection and digest) and judge it by ``policy``.

    ``policy_sha256`` is :func:`policy_digest` of ``policy`` when the caller has it already.
    ``eventlog`` is the log's bytes, or None. ``eventlog_sha256`` names the log when its bytes
    are not given (computed from ``eventlog`` when they are). When ``judged`` holds the same
    :func:`appraisal_key`, its outcome is returned (``reused``) without the log. Raises the
    :class:`~hostseal.attest.AttestError` of the first failed check,
    :class:`~hostseal.measure.EventLogError` for an unparseable log, and
    :class:`EventLogUnavailable` when the log is named by digest, not given, and needed (the
    judgement cannot be reused): the caller that holds it asks again with its bytes.
    """
    quote, sig = verify_signed_quote(ak, attest, signature, nonce=nonce)
    digest = policy_sha256 if policy_sha256 is not None else policy_digest(policy)
    raw = eventlog
    if raw is not None:
        computed = hashlib.sha256(raw).hexdigest()
        if eventlog_sha256 is not None and not hmac.compare_digest(computed, eventlog_sha256):
            raise EventLogUnavailable(
                f"The event log sent has SHA-256 {computed}, not {eventlog_sha256} as the "
                "evidence says.",
                "Send either the event log or its SHA-256, consistently.",
            )
        eventlog_sha256 = computed
    key = appraisal_key(digest, quote, sig.hash.name, eventlog_sha256)
    if judged is not None and hmac.compare_digest(judged.key, key):
        # The TPM signed this selection and pcrDigest: the values are the judged ones, whatever
        # values were presented with the quote.
        return Appraisal(
            judged.status, judged.messages, key, quote, {}, eventlog_sha256, None, None, True
        )
    values = check_pcr_values(quote, sig, pcrs)
    log = None
    if raw is not None:
        log = parse_event_log(bytes(raw))
        mismatches = compare_pcrs(log, values)
        if mismatches:
            raise QuoteEventLogMismatch(mismatches)
    elif eventlog_sha256 is not None:
        raise EventLogUnavailable(
            f"The evidence names the event log with SHA-256 {eventlog_sha256} but does not send "
            "it, and no log is at hand.",
            "Send the event log itself with the evidence.",
        )
    verdict = evaluate(policy, values, log)
    return Appraisal(
        verdict.status,
        tuple(verdict.messages),
        key,
        quote,
        values,
        eventlog_sha256,
        log,
        verdict,
        False,
    )
