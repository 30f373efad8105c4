"""Verify a TPM 2.0 quote: bytes and typed values in, a :class:`QuoteResult` out, or an error.

The checks, in order, each failure its own :class:`~hostseal.attest.errors.AttestError`:

1. ``quote``: TPMS_ATTEST parses, starts with TPM_GENERATED_VALUE and is a quote
   (:class:`QuoteMalformed`, :class:`NotAQuote`); a TPM-described AK must be a restricted
   signing key (:class:`AkUnsuitable`);
2. ``signature``: the AK's signature over the TPMS_ATTEST bytes, with the signature's scheme and
   hash: RSASSA-PKCS1-v1_5, RSASSA-PSS (any salt length: TPMs use the largest the key allows,
   or the digest length for FIPS 186-4, and the verifier cannot tell), ECDSA
   (:class:`QuoteSignatureInvalid`);
3. ``nonce``: extraData equals the verifier's nonce, compared in constant time
   (:class:`NonceMismatch`);
4. ``pcr_selection``: the PCRs presented are exactly the PCRs quoted
   (:class:`PcrSelectionMismatch`);
5. ``pcr_digest``: the hash of the presented values, concatenated in selection order, is the
   quote's pcrDigest; the hash is the signing scheme's, which the TPM uses for pcrDigest
   (:class:`PcrDigestMismatch`);
6. ``eventlog`` (if given): the log replays to the quoted values, compared with
   :func:`hostseal.measure.compare_pcrs` (:class:`QuoteEventLogMismatch`, which is also an
   :class:`~hostseal.measure.EventLogReplayMismatch`; an unparseable log raises
   :class:`~hostseal.measure.EventLogError`).

Every error raised here carries ``details["checks"]``: each check's state (``passed``,
``failed``, ``not run``, ``not requested``), so a report can show how far the evidence got.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hostseal.attest.errors import (
    AkUnsuitable,
    NonceMismatch,
    NotAQuote,
    PcrDigestMismatch,
    PcrSelectionMismatch,
    QuoteEventLogMismatch,
    QuoteMalformed,
    QuoteSignatureInvalid,
)
from hostseal.attest.tpm_structures import (
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSAPSS,
    ALG_RSASSA,
    ATTEST_TYPES,
    ST_ATTEST_QUOTE,
    TPM_GENERATED_VALUE,
    Attest,
    ClockInfo,
    PcrSelection,
    Signature,
    alg_name,
    parse_attest,
    parse_signature,
    quote_fields,
)
from hostseal.attest.tpmkey import AkPublic
from hostseal.errors import HostsealError
from hostseal.measure.events import ALGORITHMS_BY_NAME, EventLog
from hostseal.measure.parse import parse_event_log
from hostseal.measure.replay import compare_pcrs

_PKCS1V15 = padding.PKCS1v15()  # stateless: one for every verification
CHECKS = ("quote", "signature", "nonce", "pcr_selection", "pcr_digest", "eventlog")

_SCHEME_TEXT = {
    ALG_RSASSA: "RSASSA-PKCS1-v1_5",
    ALG_RSAPSS: "RSASSA-PSS",
    ALG_ECDSA: "ECDSA",
}
_NOT_A_QUOTE_REMEDY = (
    "Send the TPMS_ATTEST that TPM2_Quote returned (tpm2_quote -m FILE), unchanged; "
    "an attestation of another kind says nothing about the PCRs."
)


@dataclass(frozen=True, slots=True)
class Quote:
    """What the TPM signed in a quote (TPMS_ATTEST with TPMS_QUOTE_INFO)."""

    selection: tuple[PcrSelection, ...]
    pcr_digest: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    qualified_signer: bytes

    @classmethod
    def from_attest(cls, attest: Attest) -> Quote:
        assert attest.quote is not None
        return cls(
            attest.quote.selection,
            attest.quote.pcr_digest,
            attest.extra_data,
            attest.clock_info,
            attest.firmware_version,
            attest.qualified_signer,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "selection": [s.to_dict() for s in self.selection],
            "pcr_digest": self.pcr_digest.hex(),
            "extra_data": self.extra_data.hex(),
            "clock_info": self.clock_info.to_dict(),
            "firmware_version": f"0x{self.firmware_version:016x}",
            "qualified_signer": self.qualified_signer.hex(),
        }


@dataclass(frozen=True)
class QuoteResult:
    """A verified quote: the quote, its signature, the PCR values it vouches for (bank -> PCR ->
    value, only the quoted ones), the parsed event log if one was checked, and the checks that
    passed (``"eventlog"`` only when a log was given)."""

    quote: Quote
    signature: Signature
    ak: AkPublic
    pcrs: dict[str, dict[int, bytes]]
    eventlog: EventLog | None
    checks: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "verified": True,
            "checks": _check_states(self.checks, None, self.eventlog is not None),
            "ak": self.ak.to_dict(),
            "signature": self.signature.to_dict(),
            "quote": self.quote.to_dict(),
            "pcrs": {
                bank: {str(pcr): value.hex() for pcr, value in values.items()}
                for bank, values in self.pcrs.items()
            },
            "eventlog": None
            if self.eventlog is None
            else {"events": len(self.eventlog.events), "banks": list(self.eventlog.banks)},
        }


def verify_quote(
    ak: AkPublic,
    attest: bytes,
    signature: bytes | Signature,
    *,
    nonce: bytes,
    pcrs: Mapping[str, Mapping[int, bytes]],
    eventlog: bytes | EventLog | None = None,
    ebs_workaround: bool = False,
) -> QuoteResult:
    """Verify a quote (TPMS_ATTEST bytes and TPMT_SIGNATURE bytes) made with ``ak`` over
    ``nonce``, the PCR values presented with it (bank name -> PCR -> value, banks named as in
    :mod:`hostseal.measure`: ``sha256``), and optionally the event log.

    An empty ``nonce`` is accepted (some test vectors have none) but proves no freshness: a
    verifier must send a fresh random nonce per quote. ``ebs_workaround`` is passed to
    :func:`hostseal.measure.compare_pcrs`. Raises an :class:`AttestError` subclass (or
    :class:`~hostseal.measure.EventLogError` for an unparseable log) on the first failed check.
    """
    passed: list[str] = []
    try:
        parsed, sig = _signed(ak, attest, signature, nonce, passed)
        values = _check_selection(parsed.selection, pcrs)
        passed.append("pcr_selection")
        _check_digest(parsed, values, sig)
        passed.append("pcr_digest")
        log = None
        if eventlog is not None:
            log = eventlog if isinstance(eventlog, EventLog) else parse_event_log(eventlog)
            mismatches = compare_pcrs(log, values, ebs_workaround=ebs_workaround)
            if mismatches:
                raise QuoteEventLogMismatch(mismatches)
            passed.append("eventlog")
    except HostsealError as err:
        err.details["checks"] = _check_states(passed, CHECKS[len(passed)], eventlog is not None)
        raise
    return QuoteResult(parsed, sig, ak, values, log, tuple(passed))


def verify_signed_quote(
    ak: AkPublic, attest: bytes, signature: bytes | Signature, *, nonce: bytes
) -> tuple[Quote, Signature]:
    """The first half of :func:`verify_quote`: the quote parses, ``ak`` may sign quotes and
    signed it, over ``nonce``. What it says of the PCRs (selection, ``pcr_digest``) is then
    vouched for by the TPM; :func:`check_pcr_values` checks values presented against it."""
    passed: list[str] = []
    try:
        return _signed(ak, attest, signature, nonce, passed)
    except HostsealError as err:
        err.details["checks"] = _check_states(passed, CHECKS[len(passed)], False)
        raise


def check_pcr_values(
    quote: Quote, signature: Signature, pcrs: Mapping[str, Mapping[int, bytes]]
) -> dict[str, dict[int, bytes]]:
    """The second half of :func:`verify_quote` without the log: the values presented are
    exactly the quoted PCRs and hash to the quote's ``pcr_digest``; the verified values."""
    passed = ["quote", "signature", "nonce"]
    try:
        values = _check_selection(quote.selection, pcrs)
        passed.append("pcr_selection")
        _check_digest(quote, values, signature)
    except HostsealError as err:
        err.details["checks"] = _check_states(passed, CHECKS[len(passed)], False)
        raise
    return values


def _signed(
    ak: AkPublic, attest: bytes, signature: bytes | Signature, nonce: bytes, passed: list[str]
) -> tuple[Quote, Signature]:
    parsed = parse_quote(attest)
    _check_ak(ak)
    passed.append("quote")
    sig = signature if isinstance(signature, Signature) else parse_signature(signature)
    _check_signature(ak, bytes(attest), sig)
    passed.append("signature")
    if not hmac.compare_digest(parsed.extra_data, bytes(nonce)):
        raise NonceMismatch(
            "The quote was not made for this challenge: its nonce (extraData, "
            f"{len(parsed.extra_data)} bytes) is not the nonce the verifier sent "
            f"({len(nonce)} bytes).",
            "The quote is stale or replayed, or answers another challenge: ask the host "
            "for a new quote over a fresh nonce. If it happens again, the host may be "
            "replaying old evidence: treat it as untrusted.",
            {"expected": bytes(nonce).hex(), "actual": parsed.extra_data.hex()},
        )
    passed.append("nonce")
    return parsed, sig


def _check_states(
    passed: tuple[str, ...] | list[str], failed: str | None, log: bool
) -> dict[str, str]:
    states = {}
    for name in CHECKS:
        if name in passed:
            states[name] = "passed"
        elif name == failed:
            states[name] = "failed"
        elif name == "eventlog" and not log:
            states[name] = "not requested"
        else:
            states[name] = "not run"
    return states


def parse_quote(attest: bytes) -> Quote:
    """The quote in a TPMS_ATTEST: raises :class:`NotAQuote` when the bytes do not start with
    TPM_GENERATED_VALUE or are another kind of attestation, :class:`QuoteMalformed` when they do
    not parse. The signature is not checked: use :func:`verify_quote` for that."""
    raw = bytes(attest)
    fields = quote_fields(raw)
    if fields is not None:
        selection, digest, extra, clock, firmware, signer = fields
        return Quote(selection, digest, extra, clock, firmware, signer)
    if len(raw) >= 4 and int.from_bytes(raw[:4], "big") != TPM_GENERATED_VALUE:
        raise NotAQuote(
            f"The attestation does not start with TPM_GENERATED_VALUE (0xff544347) but with "
            f"0x{raw[:4].hex()}: it was not generated by a TPM.",
            _NOT_A_QUOTE_REMEDY,
            {"magic": f"0x{raw[:4].hex()}"},
        )
    parsed = parse_attest(raw)
    if parsed.type != ST_ATTEST_QUOTE:
        kind, command = ATTEST_TYPES.get(parsed.type, (parsed.type_name, "an unknown command"))
        raise NotAQuote(
            f"The attestation is not a quote: its type is {kind} (0x{parsed.type:04x}, made by "
            f"{command}), not TPM_ST_ATTEST_QUOTE (0x8018, made by TPM2_Quote).",
            _NOT_A_QUOTE_REMEDY,
            {"type": f"0x{parsed.type:04x}", "type_name": kind},
        )
    return Quote.from_attest(parsed)


def _check_ak(ak: AkPublic) -> None:
    if ak.public is not None and not ak.public.restricted_signing:
        raise AkUnsuitable(
            f"The key given as the AK is not a restricted signing key (objectAttributes "
            f"0x{ak.public.attributes:08x}): the TPM would sign anything with it, so a quote "
            "it signs proves nothing.",
            "Use the host's attestation key, created with the restricted and sign attributes "
            "(tpm2_createak does this), and enrol it again.",
            {"attributes": f"0x{ak.public.attributes:08x}"},
        )


def _check_signature(ak: AkPublic, attest: bytes, sig: Signature) -> None:
    def invalid(why: str) -> QuoteSignatureInvalid:
        scheme = f"{_SCHEME_TEXT[sig.sig_alg]} with {sig.hash.name}"
        details: dict[str, object] = {"scheme": sig.scheme, "hash": sig.hash.name}
        return QuoteSignatureInvalid(
            f"The quote's signature ({scheme}) does not verify with the attestation key (AK): "
            f"{why}.",
            "The quote was altered, or signed by another key than the AK enrolled for this "
            "host: check that the AK is the host's, and ask the host for a new quote. If it "
            "fails again, treat the host as untrusted.",
            details,
        )

    public = ak.public
    if public is not None and public.scheme not in (ALG_NULL, sig.sig_alg):
        raise invalid(f"the AK signs with {alg_name(public.scheme)}, not {sig.scheme}")
    if public is not None and public.scheme_hash not in (ALG_NULL, sig.hash_alg):
        raise invalid(f"the AK signs with {alg_name(public.scheme_hash)}, not {sig.hash.name}")
    key = ak.key
    hash_alg = sig.hash.crypto()
    try:
        if sig.sig_alg == ALG_ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise invalid("an ECDSA signature, but the AK is an RSA key")
            encoded = encode_dss_signature(
                int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big")
            )
            key.verify(encoded, attest, ec.ECDSA(hash_alg))
            return
        if not isinstance(key, rsa.RSAPublicKey):
            raise invalid(f"an RSA signature ({sig.scheme}), but the AK is an ECC key")
        if len(sig.rsa_sig) != (key.key_size + 7) // 8:
            raise invalid(
                f"it is {len(sig.rsa_sig)} bytes, an RSA-{key.key_size} signature is "
                f"{(key.key_size + 7) // 8}"
            )
        if sig.sig_alg == ALG_RSASSA:
            key.verify(sig.rsa_sig, attest, _PKCS1V15, hash_alg)
        else:
            pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.AUTO)
            key.verify(sig.rsa_sig, attest, pss, hash_alg)
    except InvalidSignature:
        raise invalid("the signature does not match the quote") from None


def _check_selection(
    selection: tuple[PcrSelection, ...], pcrs: Mapping[str, Mapping[int, bytes]]
) -> dict[str, dict[int, bytes]]:
    quoted: dict[str, set[int]] = {}
    for sel in selection:
        if sel.pcrs:
            quoted.setdefault(sel.bank, set()).update(sel.pcrs)
    presented = {bank: set(values) for bank, values in pcrs.items() if values}
    if not quoted:
        raise PcrSelectionMismatch(
            "The quote selects no PCR: it vouches for nothing about how the host booted.",
            "Quote the PCRs the attestation policy checks (for example tpm2_quote -l "
            "sha256:0,1,2,3,4,5,6,7).",
            {"quoted": {}, "missing": [], "extra": []},
        )
    if presented != quoted:
        missing = {b: p - presented.get(b, set()) for b, p in quoted.items()}
        extra = {b: p - quoted.get(b, set()) for b, p in presented.items()}
        parts = []
        if any(missing.values()):
            parts.append(f"missing quoted {_pcr_list(missing)}")
        if any(extra.values()):
            parts.append(f"presented but not quoted: {_pcr_list(extra)}")
        raise PcrSelectionMismatch(
            f"The PCR values presented are not the PCRs the quote covers ({_pcr_list(quoted)}): "
            f"{'; '.join(parts)}.",
            "Send exactly the PCR values read with the quote (tpm2_quote -o), for exactly "
            "the PCRs it selected: a PCR that was not quoted cannot be trusted, and a quoted "
            "PCR without its value cannot be checked.",
            {
                "quoted": {b: sorted(p) for b, p in quoted.items()},
                "missing": _pcr_items(missing),
                "extra": _pcr_items(extra),
            },
        )
    values: dict[str, dict[int, bytes]] = {}
    for bank in quoted:
        known = ALGORITHMS_BY_NAME.get(bank)
        values[bank] = {}
        for pcr in sorted(quoted[bank]):
            value = bytes(pcrs[bank][pcr])
            if known is not None and len(value) != known.size:
                raise QuoteMalformed(
                    f"The value of {bank} PCR {pcr} is {len(value)} bytes; a {bank} PCR is "
                    f"{known.size}.",
                    "Send the PCR values as the TPM read them (tpm2_quote -o or "
                    "tpm2_pcrread), one full digest per PCR.",
                    structure="PCR values",
                )
            values[bank][pcr] = value
    return values


def _pcr_list(pcrs: Mapping[str, set[int]]) -> str:
    """``sha256 PCR 0-7, 14; sha1 PCR 1``."""
    return "; ".join(f"{bank} PCR {_ranges(sorted(p))}" for bank, p in pcrs.items() if p)


def _ranges(numbers: list[int]) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], -1]:
        if n == prev + 1:
            prev = n
            continue
        if prev - start >= 2:
            parts.append(f"{start}-{prev}")
        else:
            parts.extend(str(x) for x in range(start, prev + 1))
        start = prev = n
    return ", ".join(parts)


def _pcr_items(pcrs: Mapping[str, set[int]]) -> list[dict[str, object]]:
    return [{"bank": b, "pcr": n} for b, p in pcrs.items() for n in sorted(p)]


def pcr_digest(
    selection: tuple[PcrSelection, ...], values: Mapping[str, Mapping[int, bytes]], hash_name: str
) -> bytes:
    """H(values of the selected PCRs, concatenated in selection order): what TPM2_Quote puts in
    pcrDigest, with H the signing scheme's hash."""
    parts: list[bytes] = []
    for sel in selection:
        bank = values[sel.bank]
        parts.extend(bank[pcr] for pcr in sel.pcrs)
    return hashlib.new(hash_name, b"".join(parts)).digest()


def _check_digest(quote: Quote, values: Mapping[str, Mapping[int, bytes]], sig: Signature) -> None:
    digest = pcr_digest(quote.selection, values, sig.hash.name)
    if hmac.compare_digest(digest, quote.pcr_digest):
        return
    raise PcrDigestMismatch(
        "The PCR values presented are not the values the TPM quoted: their "
        f"{sig.hash.name} digest is {digest.hex()}, the quote's pcrDigest is "
        f"{quote.pcr_digest.hex() or '(empty)'}.",
        "The values were changed after the quote, or read at another moment: send the values "
        "read together with the quote (tpm2_quote -o) and do not trust values that do not "
        "match. If a fresh quote fails the same way, treat the host as untrusted.",
        {"hash": sig.hash.name, "expected": quote.pcr_digest.hex(), "actual": digest.hex()},
    )
