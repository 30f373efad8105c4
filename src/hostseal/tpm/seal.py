"""Sealing a secret to a TPM under a PCR policy.

* The parent is a primary key of the storage hierarchy, ECC P-256 with AES-128-CFB, re-derived
  from the TPM's storage seed each time (never persisted): a cleared TPM (new seed) or another
  TPM derives a different parent, and the sealed object no longer loads.
* The sealed object is a keyed-hash object whose only authorisation is a PolicyPCR over the
  chosen PCRs: ``userWithAuth`` is clear, so no password can open it.
* The policy digest is computed here from *expected* PCR values, so a secret can be sealed to a
  boot that was measured, not only to whatever the PCRs hold.
* Secrets cross the bus to and from the TPM encrypted: sessions are salted with the primary key
  and use parameter encryption (a sniffed LPC/SPI bus shows no key).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.types import (
    TPM2B_DIGEST,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
)

from hostseal.tpm.device import BANKS, Tpm, translate
from hostseal.tpm.errors import TpmError

TPM_CC_POLICY_PCR = 0x0000017F
PRIMARY_TEMPLATE = "ecc-p256-aes128cfb-storage"
_RC_POLICY_FAIL = 0x09D  # TPM_RC_POLICY_FAIL, as decoded by TSS2_Exception.error
_RC_INTEGRITY = 0x09F  # TPM_RC_INTEGRITY: the object's parent (seed) is not the one it had


class SealedObjectWrongTpm(TpmError):
    """The sealed object does not load: another TPM, or this TPM was cleared."""


class PolicyNotSatisfied(TpmError):
    """The sealed object loads, but the PCRs are not the values it was sealed to."""


@dataclass(frozen=True)
class SealedBlob:
    """What must be stored to unseal later: the object's public and private areas and the
    policy it was sealed under."""

    public: bytes
    private: bytes
    bank: str
    pcrs: tuple[int, ...]
    policy_digest: bytes


def pcr_selection_bytes(bank: str, pcrs: Sequence[int]) -> bytes:
    """TPML_PCR_SELECTION with one bank, marshalled (3-byte select, 24 PCRs)."""
    mask = bytearray(3)
    for pcr in pcrs:
        if not 0 <= pcr <= 23:
            raise TpmError(f"PCR {pcr} does not exist.", "PCR indices are 0 to 23.")
        mask[pcr // 8] |= 1 << (pcr % 8)
    return struct.pack(">IHB", 1, int(BANKS[bank]), 3) + bytes(mask)


def policy_pcr_digest(bank: str, pcr_values: Mapping[int, bytes]) -> bytes:
    """The SHA-256 policy digest of PolicyPCR over ``pcr_values`` (TPM 2.0 Part 3, 23.7)."""
    pcrs = sorted(pcr_values)
    pcr_digest = hashlib.sha256(b"".join(pcr_values[i] for i in pcrs)).digest()
    return hashlib.sha256(
        b"\0" * 32
        + struct.pack(">I", TPM_CC_POLICY_PCR)
        + pcr_selection_bytes(bank, pcrs)
        + pcr_digest
    ).digest()


def _primary_public() -> Any:
    attrs = (
        TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.DECRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA
    )
    return TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=attrs, nameAlg="sha256")


@contextlib.contextmanager
def _primary(tpm: Tpm) -> Iterator[Any]:
    with tpm.doing("derive the storage primary key") as esapi:
        handle, _, _, _, _ = esapi.create_primary(None, _primary_public(), ESYS_TR.OWNER)
    try:
        yield handle
    finally:
        with contextlib.suppress(TSS2_Exception):
            tpm.esapi.flush_context(handle)


def _session(tpm: Tpm, primary: Any, kind: Any) -> Any:
    """A session salted with the primary key, with AES-128-CFB parameter encryption."""
    sym = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES)
    sym.keyBits.aes = 128
    sym.mode.aes = TPM2_ALG.CFB
    with tpm.doing("start a session") as esapi:
        session = esapi.start_auth_session(
            tpm_key=primary,
            bind=ESYS_TR.NONE,
            session_type=kind,
            symmetric=sym,
            auth_hash=TPM2_ALG.SHA256,
        )
        esapi.trsess_set_attributes(
            session,
            TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT,
        )
    return session


def seal(tpm: Tpm, secret: bytes, bank: str, pcr_values: Mapping[int, bytes]) -> SealedBlob:
    """Seal ``secret`` (at most 128 bytes) so that only this TPM, with these PCR values in
    ``bank``, releases it."""
    if not 0 < len(secret) <= 128:
        raise TpmError(f"A sealed secret must be 1 to 128 bytes, not {len(secret)}.", "")
    attributes = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
    if pcr_values:
        policy = policy_pcr_digest(bank, pcr_values)
    else:
        # Bound to this TPM only (any boot of this host may unseal): an empty authValue.
        policy = b""
        attributes |= TPMA_OBJECT.USERWITHAUTH
    public = TPMT_PUBLIC(
        type=TPM2_ALG.KEYEDHASH,
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=attributes,
        authPolicy=TPM2B_DIGEST(policy),
    )
    public.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
    with _primary(tpm) as primary:
        session = _session(tpm, primary, TPM2_SE.HMAC)
        try:
            with tpm.doing("seal the key") as esapi:
                private, out_public, _, _, _ = esapi.create(
                    primary, sensitive, TPM2B_PUBLIC(public), session1=session
                )
        finally:
            with contextlib.suppress(TSS2_Exception):
                tpm.esapi.flush_context(session)
    return SealedBlob(
        public=bytes(out_public.marshal()),
        private=bytes(private.marshal()),
        bank=bank,
        pcrs=tuple(sorted(pcr_values)),
        policy_digest=policy,
    )


def unseal(tpm: Tpm, blob: SealedBlob) -> bytes:
    """The sealed secret, if this TPM and its current PCRs satisfy the policy.

    Raises :class:`SealedObjectWrongTpm` when the object does not load (another TPM, or this
    one cleared) and :class:`PolicyNotSatisfied` when the PCRs differ from the sealed values.
    """
    try:
        public, _ = TPM2B_PUBLIC.unmarshal(blob.public)
        private, _ = TPM2B_PRIVATE.unmarshal(blob.private)
    except Exception:
        raise TpmError(
            "The sealed key object is damaged and cannot be parsed.",
            "Unlock with a recovery key.",
        ) from None
    with _primary(tpm) as primary:
        try:
            handle = tpm.esapi.load(primary, private, public)
        except TSS2_Exception as err:
            if err.error == _RC_INTEGRITY:
                raise SealedObjectWrongTpm(
                    "This TPM cannot load the sealed key: it is not the TPM the key was sealed "
                    "to, or the TPM was cleared since.",
                    "If the TPM or system board was replaced or the TPM cleared, unlock with a "
                    "recovery key; the configuration is then sealed to this TPM again.",
                ) from None
            raise translate(err, tpm.tcti, "load the sealed key") from None
        session = _session(tpm, primary, TPM2_SE.POLICY if blob.pcrs else TPM2_SE.HMAC)
        try:
            if blob.pcrs:
                sel = TPML_PCR_SELECTION(
                    [TPMS_PCR_SELECTION(hash=BANKS[blob.bank], pcrs=list(blob.pcrs))]
                )
                with tpm.doing("evaluate the PCR policy") as esapi:
                    esapi.policy_pcr(session, TPM2B_DIGEST(), sel)
            try:
                return bytes(tpm.esapi.unseal(handle, session1=session))
            except TSS2_Exception as err:
                if err.error == _RC_POLICY_FAIL:
                    raise PolicyNotSatisfied(
                        f"The TPM refused to release the key: the {blob.bank} PCRs "
                        f"{', '.join(map(str, blob.pcrs))} differ from the values it was sealed "
                        "to.",
                        "Find out what changed in the measured boot, restore it, or unlock with "
                        "a recovery key.",
                    ) from None
                raise translate(err, tpm.tcti, "unseal the key") from None
        finally:
            with contextlib.suppress(TSS2_Exception):
                tpm.esapi.flush_context(session)
            with contextlib.suppress(TSS2_Exception):
                tpm.esapi.flush_context(handle)
