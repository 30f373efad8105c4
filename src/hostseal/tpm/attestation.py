"""The host's side of attestation: an attestation key (AK), quotes, credential activation.

* The AK is an ECC P-256 restricted signing key (ECDSA-SHA256) under the storage primary of
  :mod:`hostseal.tpm.seal` (re-derived each time, never persisted); the agent keeps the AK's
  public and private areas in its state directory and loads it when it needs it. A new or
  cleared TPM cannot load it: :class:`AkUnavailable`, and the agent enrols again.
* :func:`quote` signs the PCRs with the AK over a server-chosen nonce and reads the same PCRs,
  making sure they did not change in between (the TPM's PCR update counter).
* :func:`activate_credential` proves to the server that the AK lives in the same TPM as the EK
  (TPM2_ActivateCredential with the EK under a PolicySecret(endorsement) session).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
)
from tpm2_pytss.utils import create_ek_template

from hostseal.tpm.device import _EK_TEMPLATES, BANKS, Tpm
from hostseal.tpm.errors import TpmError
from hostseal.tpm.seal import _primary

_RC_INTEGRITY = 0x09F


class AkUnavailable(TpmError):
    """The attestation key does not load in this TPM (replaced or cleared)."""


@dataclass(frozen=True)
class AkBlob:
    """What the agent stores to use its AK again: TPM2B_PUBLIC and TPM2B_PRIVATE bytes."""

    public: bytes
    private: bytes


@dataclass(frozen=True)
class QuoteEvidence:
    attest: bytes  # TPMS_ATTEST (the content of TPM2B_ATTEST)
    signature: bytes  # TPMT_SIGNATURE, marshalled
    bank: str
    pcrs: dict[int, bytes]


def _ak_template() -> Any:
    public = TPMT_PUBLIC(
        type=TPM2_ALG.ECC,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA,
    )
    detail = public.parameters.eccDetail
    detail.symmetric.algorithm = TPM2_ALG.NULL
    detail.scheme.scheme = TPM2_ALG.ECDSA
    detail.scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
    detail.curveID = TPM2_ECC.NIST_P256
    detail.kdf.scheme = TPM2_ALG.NULL
    return TPM2B_PUBLIC(public)


def create_ak(tpm: Tpm) -> AkBlob:
    """A new attestation key under the storage primary."""
    with _primary(tpm) as primary, tpm.doing("create the attestation key") as esapi:
        private, public, _, _, _ = esapi.create(primary, None, _ak_template())
    return AkBlob(public=bytes(public.marshal()), private=bytes(private.marshal()))


@contextlib.contextmanager
def _loaded_ak(tpm: Tpm, ak: AkBlob) -> Any:
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    private, _ = TPM2B_PRIVATE.unmarshal(ak.private)
    with _primary(tpm) as primary:
        try:
            handle = tpm.esapi.load(primary, private, public)
        except TSS2_Exception as err:
            if err.error == _RC_INTEGRITY:
                raise AkUnavailable(
                    "The attestation key does not load in this TPM: the TPM was replaced or "
                    "cleared since the host enrolled.",
                    "The agent enrols again; a replaced TPM's enrolment is kept as a TPM "
                    "change request until an operator runs: hostseal host accept-tpm HOST "
                    "--request ID --reason ...",
                ) from None
            raise
        try:
            yield handle
        finally:
            with contextlib.suppress(TSS2_Exception):
                tpm.esapi.flush_context(handle)


def ak_name(ak: AkBlob) -> bytes:
    """The TPM name of the AK (nameAlg || H(TPMT_PUBLIC)), as MakeCredential binds to it."""
    public, _ = TPM2B_PUBLIC.unmarshal(ak.public)
    return bytes(public.get_name().marshal())[2:]  # TPM2B_NAME -> its buffer


def _pcr_update_counter(tpm: Tpm, bank: str, pcrs: Sequence[int]) -> int:
    sel = TPML_PCR_SELECTION([TPMS_PCR_SELECTION(hash=BANKS[bank], pcrs=list(pcrs))])
    counter, _, _ = tpm.esapi.pcr_read(sel)
    return int(counter)


def quote(tpm: Tpm, ak: AkBlob, nonce: bytes, bank: str, pcrs: Sequence[int]) -> QuoteEvidence:
    """Sign ``pcrs`` of ``bank`` with the AK over ``nonce``; the PCR values come with it."""
    if not 0 < len(nonce) <= 64:
        raise TpmError(f"A quote nonce must be 1 to 64 bytes, not {len(nonce)}.", "")
    wanted = sorted(set(pcrs))
    sel = TPML_PCR_SELECTION([TPMS_PCR_SELECTION(hash=BANKS[bank], pcrs=wanted)])
    with tpm.doing("quote the PCRs"), _loaded_ak(tpm, ak) as handle:
        for _attempt in range(5):
            before = _pcr_update_counter(tpm, bank, wanted)
            attest, signature = tpm.esapi.quote(
                handle, sel, nonce, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
            )
            values = tpm.pcr_read(bank, wanted)
            if _pcr_update_counter(tpm, bank, wanted) == before:
                return QuoteEvidence(
                    attest=bytes(attest.marshal())[2:],  # TPM2B_ATTEST -> TPMS_ATTEST
                    signature=bytes(signature.marshal()),
                    bank=bank,
                    pcrs=values,
                )
    raise TpmError(
        "The PCRs kept changing while they were being quoted.",
        "Try again when the boot has settled.",
    )


def activate_credential(
    tpm: Tpm, ak: AkBlob, ek_kind: str, credential_blob: bytes, encrypted_secret: bytes
) -> bytes:
    """Recover the server's secret: possible only in the TPM holding both this EK and the AK."""
    try:
        blob, _ = TPM2B_ID_OBJECT.unmarshal(credential_blob)
        secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    except Exception:
        raise TpmError(
            "The server's credential challenge is malformed.", "Check the server version."
        ) from None
    with tpm.doing("activate the enrolment credential") as esapi, _loaded_ak(tpm, ak) as ak_h:
        _, template = create_ek_template(_EK_TEMPLATES[ek_kind], tpm._nv_read)
        ek, _, _, _, _ = esapi.create_primary(None, template, primary_handle=ESYS_TR.ENDORSEMENT)
        session = None
        try:
            sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES)
            sym.keyBits.aes = 128
            sym.mode.aes = TPM2_ALG.CFB
            session = esapi.start_auth_session(
                tpm_key=ESYS_TR.NONE,
                bind=ESYS_TR.NONE,
                session_type=TPM2_SE.POLICY,
                symmetric=sym,
                auth_hash=TPM2_ALG.SHA256,
            )
            esapi.policy_secret(ESYS_TR.ENDORSEMENT, session)
            return bytes(
                esapi.activate_credential(
                    ak_h, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                )
            )
        finally:
            if session is not None:
                with contextlib.suppress(TSS2_Exception):
                    esapi.flush_context(session)
            with contextlib.suppress(TSS2_Exception):
                esapi.flush_context(ek)
