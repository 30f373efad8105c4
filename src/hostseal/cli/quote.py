"""``hostseal quote``: verify a TPM 2.0 quote made by tpm2-tools or a hostseal agent.

Files are read in tpm2-tools' formats and turned into the typed values of
:func:`hostseal.attest.quote.verify_quote`, which does the checking:

* ``--quote``: TPMS_ATTEST (``tpm2_quote -m``);
* ``--signature``: TPMT_SIGNATURE (``tpm2_quote -s``, the default ``--format tss``) or
  ``--format plain`` (a raw RSA signature, or a DER ECDSA signature);
* ``--pcrs``: ``tpm2_quote -o`` in any ``--pcrs_format`` (``serialized``, the default: the
  in-memory TPML_PCR_SELECTION and TPML_DIGESTs, little-endian; ``marshaled``; ``values``: the
  bare digests, in the quote's selection order), or ``tpm2_pcrread`` YAML;
* ``--ak-public``: TPM2B_PUBLIC (``tpm2_createak -u``), TPMT_PUBLIC, or a PEM/DER public key.
"""

from __future__ import annotations

import re
import struct
from typing import IO

import click
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hostseal.attest.errors import AttestError, PcrDigestMismatch, QuoteMalformed
from hostseal.attest.quote import CHECKS, QuoteResult, parse_quote, verify_quote
from hostseal.attest.tpm2b import (
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSAPSS,
    ALG_RSASSA,
    HASHES,
    HASHES_BY_SIZE,
    PcrSelection,
    Reader,
    Signature,
    parse_signature,
    read_pcr_selection,
)
from hostseal.attest.tpmkey import AkPublic, load_ak_public
from hostseal.cli._common import echo_json, json_option
from hostseal.measure import EventLog, parse_event_log, replay
from hostseal.measure.events import ALGORITHMS_BY_NAME
from hostseal.measure.replay import initial_value

Pcrs = dict[str, dict[int, bytes]]

_PCR_FORMATS = (
    "tpm2_quote -o (serialized, marshaled or values) or tpm2_pcrread YAML "
    "('sha256:' then lines like '  0 : 0x3D45...')"
)

# tpm2-tools "serialized": the C structs written as they are in memory (little-endian, padded)
_SER_SELECTION = struct.Struct("<HB4sx")  # TPMS_PCR_SELECTION: hash, sizeofSelect, pcrSelect[4]
_SER_BANKS = 16  # TPM2_NUM_PCR_BANKS
_SER_SELECTION_LIST = 4 + _SER_BANKS * _SER_SELECTION.size  # TPML_PCR_SELECTION: 132 bytes
_SER_DIGEST = struct.Struct("<H64s")  # TPM2B_DIGEST: size, buffer[sizeof(TPMU_HA)]
_SER_DIGESTS = 8  # TPML_DIGEST holds up to 8
_SER_DIGEST_LIST = 4 + _SER_DIGESTS * _SER_DIGEST.size  # TPML_DIGEST: 532 bytes
_U32_LE = struct.Struct("<I")

_BANK_LINE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*$")
_VALUE_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S*)\s*$")


def _malformed(what: str) -> QuoteMalformed:
    return QuoteMalformed(
        f"PCR file: {what}.",
        f"Give the PCR values as {_PCR_FORMATS}.",
        structure="PCR file",
    )


# --- PCR files -------------------------------------------------------------------------------


def read_pcr_file(data: bytes, selection: tuple[PcrSelection, ...]) -> Pcrs:
    """PCR values from a tpm2-tools file; ``selection`` (the quote's) orders a ``values`` file.

    Raises :class:`QuoteMalformed` when the file is none of the formats.
    """
    text = _as_text(data)
    if text is not None and any(_BANK_LINE.match(line) for line in text.splitlines()):
        return parse_pcr_yaml(text)
    if _serialized_size(data):
        return parse_pcrs_serialized(data)
    try:
        return parse_pcrs_marshaled(data)
    except QuoteMalformed:
        pass
    expected = sum(len(s.pcrs) * _bank_size(s.bank) for s in selection)
    if expected and len(data) == expected:
        return parse_pcr_values(data, selection)
    raise _malformed(
        f"{len(data)} bytes that are not PCR values in a format hostseal reads "
        f"(a 'values' file for this quote would be {expected} bytes)"
    )


def _as_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if all(c.isprintable() or c.isspace() for c in text) else None


def _bank_size(bank: str) -> int:
    known = ALGORITHMS_BY_NAME.get(bank)
    if known is None:
        raise _malformed(f"the PCR bank {bank!r} is not one hostseal knows")
    return known.size


def parse_pcr_yaml(text: str) -> Pcrs:
    """``tpm2_pcrread`` output (also the ``pcrs:`` part of ``tpm2_quote``'s output)."""
    pcrs: Pcrs = {}
    bank: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _BANK_LINE.match(line)
        if header:
            name = header.group(1).lower()
            bank = name if name in ALGORITHMS_BY_NAME else None
            if bank is not None:
                pcrs.setdefault(bank, {})
            continue
        value = _VALUE_LINE.match(line)
        if value is None:
            continue  # other keys of tpm2_quote's output ("quoted:", "signature:" ...)
        if bank is None:
            raise _malformed(f"line {number}: a PCR value outside a bank ('sha256:')")
        pcr, hex_value = int(value.group(1)), value.group(2).lower().removeprefix("0x")
        try:
            digest = bytes.fromhex(hex_value)
        except ValueError:
            raise _malformed(f"line {number}: {value.group(2)!r} is not a hex value") from None
        if pcr in pcrs[bank]:
            raise _malformed(f"line {number}: {bank} PCR {pcr} is listed twice")
        pcrs[bank][pcr] = digest
    return {bank: values for bank, values in pcrs.items() if values}


def _serialized_size(data: bytes) -> bool:
    rest = len(data) - _SER_SELECTION_LIST - 4
    if rest < 0 or rest % _SER_DIGEST_LIST:
        return False
    count = _U32_LE.unpack_from(data, _SER_SELECTION_LIST)[0]
    return bool(count == rest // _SER_DIGEST_LIST and _U32_LE.unpack_from(data)[0] <= _SER_BANKS)


def parse_pcrs_serialized(data: bytes) -> Pcrs:
    """tpm2-tools' default ``--pcrs_format serialized``: the C structures as in memory."""
    if not _serialized_size(data):
        raise _malformed(f"{len(data)} bytes is not the size of a tpm2-tools 'serialized' file")
    selection = []
    for i in range(_U32_LE.unpack_from(data)[0]):
        alg_id, size, bitmap = _SER_SELECTION.unpack_from(data, 4 + i * _SER_SELECTION.size)
        if size > len(bitmap):
            raise _malformed(f"selection {i} has sizeofSelect {size}, more than 4")
        pcrs = tuple(n for n in range(size * 8) if bitmap[n // 8] >> (n % 8) & 1)
        selection.append(PcrSelection(alg_id, pcrs))
    digests = []
    offset = _SER_SELECTION_LIST + 4
    while offset < len(data):
        count = _U32_LE.unpack_from(data, offset)[0]
        if count > _SER_DIGESTS:
            raise _malformed(f"a TPML_DIGEST at offset {offset} holds {count} digests, over 8")
        for k in range(count):
            size, buffer = _SER_DIGEST.unpack_from(data, offset + 4 + k * _SER_DIGEST.size)
            if size > len(buffer):
                raise _malformed(f"a digest at offset {offset} is {size} bytes, over 64")
            digests.append(buffer[:size])
        offset += _SER_DIGEST_LIST
    return _assign(tuple(selection), digests)


def parse_pcrs_marshaled(data: bytes) -> Pcrs:
    """``--pcrs_format marshaled``: TPML_PCR_SELECTION, UINT32 count, TPML_DIGESTs (TSS
    marshalling, big-endian)."""
    r = Reader(data, "PCR file (marshaled)")
    selection = read_pcr_selection(r, "pcrSelections")
    digests: list[bytes] = []
    for i in range(r.u32("the count of TPML_DIGESTs")):
        count = r.u32(f"TPML_DIGEST {i}.count")
        if count > _SER_DIGESTS:
            raise r.fail(f"TPML_DIGEST {i} holds {count} digests, more than 8")
        digests.extend(r.tpm2b(f"TPML_DIGEST {i} digest {k}", 64) for k in range(count))
    r.end()
    return _assign(selection, digests)


def parse_pcr_values(data: bytes, selection: tuple[PcrSelection, ...]) -> Pcrs:
    """``--pcrs_format values``: the digests back to back, in the quote's selection order."""
    digests: list[bytes] = []
    offset = 0
    for sel in selection:
        size = _bank_size(sel.bank)
        for _ in sel.pcrs:
            digests.append(data[offset : offset + size])
            offset += size
    if offset != len(data):
        raise _malformed(f"{len(data)} bytes of values, the quote's selection needs {offset}")
    return _assign(selection, digests)


def _assign(selection: tuple[PcrSelection, ...], digests: list[bytes]) -> Pcrs:
    wanted = sum(len(s.pcrs) for s in selection)
    if wanted != len(digests):
        raise _malformed(f"it selects {wanted} PCRs but holds {len(digests)} values")
    pcrs: Pcrs = {}
    values = iter(digests)
    for sel in selection:
        bank = pcrs.setdefault(sel.bank, {})
        for pcr in sel.pcrs:
            bank[pcr] = next(values)
    return pcrs


def pcrs_from_eventlog(selection: tuple[PcrSelection, ...], log: EventLog) -> Pcrs:
    """The quoted PCRs' values as the event log describes them (PCRs the log does not extend at
    their reset value): the quote's pcrDigest then checks the log itself."""
    banks = {s.bank for s in selection if s.pcrs}
    missing = banks - set(log.banks)
    if missing:
        raise click.UsageError(
            f"The event log has no {', '.join(sorted(missing))} digests to compute the quoted "
            "PCRs from: give the PCR values with --pcrs."
        )
    replayed = replay(log, sorted(banks))
    pcrs: Pcrs = {}
    for sel in selection:
        size = _bank_size(sel.bank)
        for pcr in sel.pcrs:
            value = replayed[sel.bank].get(pcr)
            if value is None:
                value = initial_value(size, pcr, log.startup_locality)
            pcrs.setdefault(sel.bank, {})[pcr] = value
    return pcrs


# --- signatures ------------------------------------------------------------------------------


def read_signature_file(data: bytes, ak: AkPublic, pcr_digest: bytes) -> Signature:
    """A TPMT_SIGNATURE, or tpm2-tools' ``--format plain``: for an RSA AK the bare signature
    (exactly the modulus size; a TPMT_SIGNATURE is 6 bytes longer), for an ECC AK a DER
    ECDSA-Sig-Value (starts with 0x30; a TPMT_SIGNATURE starts with 0x0018).

    A plain signature does not say its scheme or hash: the scheme is the AK's (RSASSA when the
    AK has none, as tpm2_quote chooses), the hash the AK's, else the one of the quote's
    pcrDigest size (TPM2_Quote hashes the PCRs with the signing hash).
    """
    key = ak.key
    plain_rsa = isinstance(key, rsa.RSAPublicKey) and len(data) == (key.key_size + 7) // 8
    plain_ecdsa = isinstance(key, ec.EllipticCurvePublicKey) and data[:1] == b"\x30"
    if not (plain_rsa or plain_ecdsa):
        return parse_signature(data)
    public = ak.public
    hash_alg = public.scheme_hash if public is not None else ALG_NULL
    if hash_alg not in HASHES:
        known = HASHES_BY_SIZE.get(len(pcr_digest))
        if known is None:
            raise QuoteMalformed(
                "The signature is in tpm2-tools' plain format, which does not say its hash, "
                f"and the quote's pcrDigest ({len(pcr_digest)} bytes) does not tell it either.",
                "Save the signature as a TPMT_SIGNATURE (tpm2_quote -s FILE, without -f plain).",
                structure="plain signature",
            )
        hash_alg = known.alg_id
    if plain_rsa:
        scheme = ALG_RSAPSS if public is not None and public.scheme == ALG_RSAPSS else ALG_RSASSA
        return Signature(scheme, hash_alg, rsa_sig=data)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        r, s = decode_dss_signature(data)
    except ValueError:
        raise QuoteMalformed(
            "The signature starts like a DER ECDSA signature (tpm2-tools' plain format) but "
            "is not one.",
            "Save the signature as a TPMT_SIGNATURE (tpm2_quote -s FILE).",
            structure="plain signature",
            offset=0,
        ) from None
    size = (key.curve.key_size + 7) // 8
    if r.bit_length() > size * 8 or s.bit_length() > size * 8:
        raise QuoteMalformed(
            f"The DER ECDSA signature's values are larger than the AK's {key.curve.name} curve.",
            "Check that the AK given is the key that signed the quote.",
            structure="plain signature",
            offset=0,
        )
    return Signature(ALG_ECDSA, hash_alg, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big"))


# --- the commands ----------------------------------------------------------------------------


def _nonce(_ctx: click.Context, _param: click.Parameter, value: str) -> bytes:
    text = value.strip().lower().removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not hex (for example 0badc0de).") from None


@click.group()
def quote() -> None:
    """TPM 2.0 quotes: check a quote's signature, nonce, PCR values and event log."""


@quote.command("verify")
@click.option(
    "--ak-public",
    type=click.File("rb"),
    required=True,
    help="The attestation key: TPM2B_PUBLIC (tpm2_createak -u), TPMT_PUBLIC or a PEM key.",
)
@click.option(
    "--quote",
    "quote_file",
    type=click.File("rb"),
    required=True,
    help="The quote: TPMS_ATTEST (tpm2_quote -m).",
)
@click.option(
    "--signature",
    type=click.File("rb"),
    required=True,
    help="The signature: TPMT_SIGNATURE (tpm2_quote -s), or tpm2-tools' plain format.",
)
@click.option(
    "--nonce",
    required=True,
    metavar="HEX",
    callback=_nonce,
    help="The nonce the quote must carry (tpm2_quote -q), in hex; '' for none.",
)
@click.option(
    "--pcrs",
    type=click.File("rb"),
    help="The quoted PCR values: tpm2_quote -o (any -F format) or tpm2_pcrread YAML. "
    "Without it the values are computed from --eventlog.",
)
@click.option(
    "--eventlog",
    type=click.File("rb"),
    help="The binary event log, checked against the quoted PCR values.",
)
@click.option(
    "--ebs-workaround",
    is_flag=True,
    help="Accept a PCR 5 that lacks the ExitBootServices events in the log (buggy firmware).",
)
@json_option
def verify(
    ak_public: IO[bytes],
    quote_file: IO[bytes],
    signature: IO[bytes],
    nonce: bytes,
    pcrs: IO[bytes] | None,
    eventlog: IO[bytes] | None,
    ebs_workaround: bool,
    as_json: bool,
) -> None:
    """Verify a quote: the AK's signature, the nonce, that the PCR values are exactly the quoted
    ones and hash to the quote's digest, and that the event log replays to them.

    Exits 0 only when every check passes; otherwise prints what failed and what to do, and
    exits 1.
    """
    ak = load_ak_public(ak_public.read())
    attest = quote_file.read()
    try:  # NotAQuote or QuoteMalformed before reading anything else
        parsed = parse_quote(attest)
    except AttestError as err:
        err.details.setdefault(
            "checks", {c: "failed" if c == "quote" else "not run" for c in CHECKS}
        )
        raise
    selection, digest = parsed.selection, parsed.pcr_digest
    log = parse_event_log(eventlog.read()) if eventlog is not None else None
    if pcrs is not None:
        values = read_pcr_file(pcrs.read(), selection)
    elif log is not None:
        values = pcrs_from_eventlog(selection, log)
    else:
        raise click.UsageError(
            "Give the quoted PCR values (--pcrs, from tpm2_quote -o) or the event log "
            "(--eventlog) to compute them from."
        )
    sig = read_signature_file(signature.read(), ak, digest)
    try:
        result = verify_quote(
            ak, attest, sig, nonce=nonce, pcrs=values, eventlog=log, ebs_workaround=ebs_workaround
        )
    except PcrDigestMismatch as err:
        if pcrs is not None:
            raise
        raise PcrDigestMismatch(
            "The event log does not account for the quoted PCRs: the values it replays to "
            f"hash to {err.details['actual']}, the quote's pcrDigest is "
            f"{err.details['expected']}. A quoted PCR that the firmware log does not extend "
            "(IMA's PCR 10, for example) holds a value the log cannot give.",
            "Give the PCR values read with the quote (--pcrs FILE, from tpm2_quote -o) to see "
            "which PCR differs, or quote only the PCRs the event log covers.",
            err.details,
        ) from None
    data = result.to_dict()
    data["pcrs_from"] = "file" if pcrs is not None else "eventlog"
    if as_json:
        echo_json(data)
        return
    _print(result, pcrs_from_log=pcrs is None)


def _print(result: QuoteResult, *, pcrs_from_log: bool) -> None:
    q, sig, ak = result.quote, result.signature, result.ak.to_dict()
    quoted = "; ".join(f"{s.bank} PCR {','.join(map(str, s.pcrs))}" for s in q.selection)
    key = f"{ak['type']} {ak.get('bits') or ak.get('curve')}"
    notes = {
        "quote": f"TPM_ST_ATTEST_QUOTE over {quoted}; clock {q.clock_info.clock} ms, "
        f"resets {q.clock_info.reset_count}, restarts {q.clock_info.restart_count}",
        "signature": f"{sig.scheme} with {sig.hash.name} by the AK ({key}"
        + (f", name {ak['name']})" if ak["name"] else ")"),
        "nonce": q.extra_data.hex() or "(empty: the quote proves no freshness)",
        "pcr_selection": "exactly the quoted PCRs were presented",
        "pcr_digest": f"{sig.hash.name} {q.pcr_digest.hex()}"
        + (" (values computed from the event log)" if pcrs_from_log else ""),
        "eventlog": f"{len(result.eventlog.events)} events replay to the quoted values"
        if result.eventlog is not None
        else "not requested",
    }
    click.echo("Quote verified.")
    for name in CHECKS:
        state = "passed" if name in result.checks else "-"
        click.echo(f"  {name:<14} {state:<7} {notes[name]}")
    for bank, values in result.pcrs.items():
        click.echo(f"{bank}:")
        for pcr, value in values.items():
            click.echo(f"  {pcr:>2} : 0x{value.hex().upper()}")
