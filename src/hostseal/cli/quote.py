"""``hostseal quote``: verify a TPM 2.0 quote made by tpm2-tools or a hostseal agent.

Files are read in tpm2-tools' formats by :mod:`hostseal.attest.tpm2tools` and turned into the
typed values of :func:`hostseal.attest.quote.verify_quote`, which does the checking:

* ``--quote``: TPMS_ATTEST (``tpm2_quote -m``);
* ``--signature``: TPMT_SIGNATURE (``tpm2_quote -s``) or tpm2-tools' ``--format plain``;
* ``--pcrs``: ``tpm2_quote -o`` in any ``--pcrs_format``, or ``tpm2_pcrread`` YAML; without it
  the quoted PCRs' values are computed from ``--eventlog``;
* ``--ak-public``: TPM2B_PUBLIC (``tpm2_createak -u``), TPMT_PUBLIC, or a PEM/DER public key.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

import click

from hostseal.cli._common import echo_json, json_option

if TYPE_CHECKING:  # the verifier (and cryptography) is loaded by the command that uses it
    from hostseal.attest.quote import QuoteResult
    from hostseal.attest.tpm2tools import Pcrs
    from hostseal.attest.tpm_structures import PcrSelection
    from hostseal.measure import EventLog


def pcrs_from_eventlog(selection: tuple[PcrSelection, ...], log: EventLog) -> Pcrs:
    """The quoted PCRs' values as the event log describes them (PCRs the log does not extend at
    their reset value): the quote's pcrDigest then checks the log itself."""
    from hostseal.attest.tpm2tools import bank_size
    from hostseal.measure import replay
    from hostseal.measure.replay import initial_value

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
        size = bank_size(sel.bank)
        for pcr in sel.pcrs:
            value = replayed[sel.bank].get(pcr)
            if value is None:
                value = initial_value(size, pcr, log.startup_locality)
            pcrs.setdefault(sel.bank, {})[pcr] = value
    return pcrs


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
    from hostseal.attest.errors import AttestError, PcrDigestMismatch
    from hostseal.attest.quote import CHECKS, parse_quote, verify_quote
    from hostseal.attest.tpm2tools import read_pcr_file, read_signature_file
    from hostseal.attest.tpmkey import load_ak_public
    from hostseal.measure import parse_event_log

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
    from hostseal.attest.quote import CHECKS

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
