"""A TPM session: the one place that talks to ``tpm2_pytss``.

``open_tpm(tcti)`` returns a :class:`Tpm`, a context manager over one ESAPI connection. Every
TSS error is translated into a :class:`~hostseal.tpm.errors.TpmError` with a remedy, so callers
never see a ``TSS2_Exception``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_RC
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMT_HA,
)
from tpm2_pytss.utils import NoSuchIndex, create_ek_template

from hostseal import tcg
from hostseal.tpm import facts as _facts
from hostseal.tpm.errors import (
    TpmBusy,
    TpmError,
    TpmLockout,
    TpmNotSupported,
    TpmUnavailable,
)
from hostseal.tpm.tcti import Tcti, parse_tcti

BANKS: dict[str, Any] = {
    "sha1": TPM2_ALG.SHA1,
    "sha256": TPM2_ALG.SHA256,
    "sha384": TPM2_ALG.SHA384,
    "sha512": TPM2_ALG.SHA512,
    "sm3_256": TPM2_ALG.SM3_256,
}
_BANK_BY_ALG = {int(alg): name for name, alg in BANKS.items()}
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3_256": 32}

# NV indices of EK certificates (TCG EK Credential Profile).
EK_CERT_NV = {"rsa": 0x01C00002, "ecc": 0x01C0000A}
_EK_TEMPLATES = {"rsa": "EK-RSA2048", "ecc": "EK-ECC256"}

# TPM2_PT_* property ids (TPM 2.0 Part 2, 6.13); not all are named by tpm2-pytss.
PT_FAMILY_INDICATOR = 0x100
PT_LEVEL = 0x101
PT_REVISION = 0x102
PT_MANUFACTURER = 0x105
PT_VENDOR_STRING_1 = 0x106
PT_FIRMWARE_VERSION_1 = 0x10B
PT_FIRMWARE_VERSION_2 = 0x10C
PT_PERMANENT = 0x200
PT_LOCKOUT_COUNTER = 0x20E
PT_MAX_AUTH_FAIL = 0x20F
PERMANENT_IN_LOCKOUT = 1 << 9  # TPMA_PERMANENT.inLockout

_RC_LOCKOUT = int(TPM2_RC.LOCKOUT)
_RC_BUSY = {int(TPM2_RC.RETRY), int(TPM2_RC.YIELDED), int(TPM2_RC.TESTING)}
_RC_INITIALIZE = int(TPM2_RC.INITIALIZE)
_TCTI_LAYER = 0x000A0000  # TSS2_TCTI_RC_LAYER
_LAYER_MASK = 0x00FF0000


def _bank_alg(bank: str) -> Any:
    try:
        return BANKS[bank]
    except KeyError:
        raise TpmError(f"Unknown PCR bank {bank!r}.", f"Use one of {', '.join(BANKS)}.") from None


def translate(err: TSS2_Exception, tcti: Tcti, doing: str) -> TpmError:
    """A TSS error as a hostseal error that says what to do."""
    rc = int(err.rc)
    base = rc & 0xFFF if rc & _LAYER_MASK == 0 else rc
    if base == _RC_LOCKOUT or (rc & 0xFFF) == _RC_LOCKOUT:
        return TpmLockout(
            f"The TPM is in dictionary-attack lockout and refused to {doing}.",
            "Wait for the lockout to expire (the TPM's recovery time), or reset it with the "
            "lockout authorization (tpm2_dictionarylockout --clear-lockout); clearing the TPM "
            "also resets it but destroys every key sealed to it.",
        )
    if (rc & 0xFFF) in _RC_BUSY:
        return TpmBusy(
            f"The TPM is busy (it asked to retry) and could not {doing}.",
            "Try again in a few seconds; if it persists, check that no other program holds "
            "the TPM (use /dev/tpmrm0, the kernel's resource manager, rather than /dev/tpm0).",
        )
    if (rc & 0xFFF) == _RC_INITIALIZE:
        return TpmUnavailable(
            f"The TPM at {tcti} has not been started (TPM2_Startup) and could not {doing}.",
            "For swtpm, start it with --flags startup-clear; for a hardware TPM the firmware "
            "must start it: check that the TPM is enabled in the firmware setup.",
        )
    if rc & _LAYER_MASK == _TCTI_LAYER:
        return TpmUnavailable(
            f"No TPM answered at {tcti} ({err}) while trying to {doing}.",
            _unavailable_remedy(tcti),
        )
    return TpmError(f"The TPM refused to {doing}: {err} (rc 0x{rc:x}).", "")


def _unavailable_remedy(tcti: Tcti) -> str:
    if tcti.is_software:
        return (
            f"Check that swtpm is running and listening at {tcti.config} (for a lab host: "
            'hostseal lab list, then eval "$(hostseal lab env NAME)").'
        )
    return (
        "Check that the host has a TPM 2.0 enabled in the firmware setup, that the kernel sees "
        "it (ls /dev/tpm*), that you may open it (root or the tss group), and that no other "
        "program holds /dev/tpm0."
    )


SYSFS_TPM = Path("/sys/class/tpm")


def check_device(tcti: Tcti, sysfs: Path = SYSFS_TPM) -> None:
    """Before opening a kernel TPM device: it exists, it is a TPM 2.0, we may open it."""
    path = tcti.device_path
    if path is None:
        return
    if not path.exists():
        raise TpmUnavailable(f"No TPM device at {path}.", _unavailable_remedy(tcti))
    major = sysfs / path.name.replace("tpmrm", "tpm") / "tpm_version_major"
    with contextlib.suppress(OSError):
        if major.read_text().strip() == "1":
            raise TpmNotSupported(
                f"The TPM at {path} is a TPM 1.2; hostseal needs TPM 2.0.",
                "Switch the TPM to TPM 2.0 mode in the firmware setup (many chips can be "
                "switched with a vendor firmware update), or install a TPM 2.0 module.",
            )
    if not os.access(path, os.R_OK | os.W_OK):
        raise TpmUnavailable(
            f"No permission to open the TPM device {path}.",
            "Run as root or as a member of the tss group.",
        )


class Tpm:
    """One connection to a TPM. Use as a context manager; all methods raise only TpmError."""

    def __init__(self, tcti: Tcti) -> None:
        self.tcti = tcti
        self._tctildr: Any = None
        self._esapi: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> Tpm:
        check_device(self.tcti)
        # The TSS libraries log every failed command to stderr; hostseal reports errors itself.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        try:
            self._tctildr = TCTILdr(self.tcti.kind, self.tcti.config)
            self._esapi = ESAPI(self._tctildr)
            if not self.tcti.has_resource_manager:
                self._flush_orphans()
        except TSS2_Exception as err:
            self.close()
            raise translate(err, self.tcti, "open a connection") from None
        return self

    def _flush_orphans(self) -> None:
        """Flush transient objects and sessions a killed process left in a TPM that has no
        resource manager (swtpm over TCP, /dev/tpm0). Such a TPM serves one connection at a
        time, so whatever is loaded when we connect belongs to nobody; left there, it fills the
        TPM's few object slots ("out of memory for object contexts")."""
        leftovers: dict[int, None] = {}
        # Transient objects, loaded sessions, saved sessions. The loaded-session listing gives
        # policy sessions with their own type (0x03), so keep both session types from it.
        for first in (0x80000000, 0x02000000, 0x03000000):
            _, data = self._esapi.get_capability(TPM2_CAP.HANDLES, first, 64)
            for h in data.data.handles:
                if int(h) >> 24 in (0x80, 0x02, 0x03):
                    leftovers[int(h)] = None
        for handle in leftovers:
            command = struct.pack(">HII", 0x8001, 14, 0x165) + struct.pack(">I", handle)
            self._tctildr.transmit(command)  # TPM2_FlushContext
            self._tctildr.receive()

    def close(self) -> None:
        if self._esapi is not None:
            with contextlib.suppress(Exception):
                self._esapi.close()
            self._esapi = None
        if self._tctildr is not None:
            with contextlib.suppress(Exception):
                self._tctildr.close()
            self._tctildr = None

    def __enter__(self) -> Tpm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def esapi(self) -> Any:
        """The raw ESAPI context, for the other modules of :mod:`hostseal.tpm` only."""
        if self._esapi is None:
            raise TpmError("The TPM connection is closed.", "Open it again with open_tpm().")
        return self._esapi

    @contextlib.contextmanager
    def doing(self, what: str) -> Iterator[Any]:
        """Run TPM commands; translate any TSS error into a TpmError about ``what``."""
        try:
            yield self.esapi
        except TSS2_Exception as err:
            raise translate(err, self.tcti, what) from None

    # -- facts -----------------------------------------------------------------------------
    def _properties(self, first: Any, count: int) -> dict[int, int]:
        with self.doing("report its properties") as esapi:
            _, data = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, first, count)
        return {int(p.property): int(p.value) for p in data.data.tpmProperties}

    def in_lockout(self) -> bool:
        """Whether the TPM is in dictionary-attack lockout now."""
        props = self._properties(PT_PERMANENT, 1)
        return bool(props.get(PT_PERMANENT, 0) & PERMANENT_IN_LOCKOUT)

    def pcr_banks(self) -> dict[str, list[int]]:
        """Allocated PCR banks and, for each, the PCRs selected (empty list: not active)."""
        with self.doing("report its PCR banks") as esapi:
            _, data = esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
        banks: dict[str, list[int]] = {}
        for sel in data.data.assignedPCR:
            name = _BANK_BY_ALG.get(int(sel.hash), f"alg-0x{int(sel.hash):04x}")
            raw = bytes(sel.pcrSelect)[: int(sel.sizeofSelect)]
            banks[name] = [i for i in range(len(raw) * 8) if raw[i // 8] >> (i % 8) & 1]
        return banks

    def facts(self) -> _facts.TpmFacts:
        props = self._properties(PT_FAMILY_INDICATOR, 32)
        family_raw = props.get(PT_FAMILY_INDICATOR, 0)
        family = family_raw.to_bytes(4, "big").decode("ascii", "replace").strip("\x00 ")
        if family != "2.0":
            raise TpmNotSupported(
                f"The TPM reports family {family!r}; hostseal needs TPM 2.0.",
                "Switch the TPM to TPM 2.0 mode in the firmware setup.",
            )
        vendor_id = tcg.vendor_id_from_u32(props.get(PT_MANUFACTURER, 0))
        strings = [props.get(PT_VENDOR_STRING_1 + i, 0) for i in range(4)]
        return _facts.TpmFacts(
            family=family,
            vendor_id=vendor_id,
            vendor_string=_facts.vendor_string(strings),
            firmware_version=_facts.firmware_version(
                props.get(PT_FIRMWARE_VERSION_1, 0),
                props.get(PT_FIRMWARE_VERSION_2, 0),
            ),
            spec_level=props.get(PT_LEVEL, 0),
            spec_revision=props.get(PT_REVISION, 0),
            kind=tcg.tpm_kind(vendor_id, software_transport=self.tcti.is_software),
            pcr_banks=self.pcr_banks(),
        )

    # -- PCRs ------------------------------------------------------------------------------
    def pcr_read(self, bank: str, pcrs: Sequence[int]) -> dict[int, bytes]:
        """Read PCR values of one bank (the TPM returns at most 8 per call)."""
        alg = _bank_alg(bank)
        wanted = sorted(set(pcrs))
        values: dict[int, bytes] = {}
        while wanted:
            sel = TPML_PCR_SELECTION([TPMS_PCR_SELECTION(hash=alg, pcrs=wanted[:8])])
            with self.doing(f"read {bank} PCRs") as esapi:
                _, got_sel, digests = esapi.pcr_read(sel)
            got = [
                i
                for s in got_sel
                for i in range(int(s.sizeofSelect) * 8)
                if bytes(s.pcrSelect)[i // 8] >> (i % 8) & 1
            ]
            if not got:
                raise TpmError(
                    f"The TPM returned no {bank} PCR values: the bank is not active.",
                    f"Activate the {bank} PCR bank in the firmware setup.",
                )
            for index, digest in zip(got, digests, strict=False):
                values[index] = bytes(digest)
            wanted = [i for i in wanted if i not in values]
        return values

    def pcr_extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        """Extend one PCR in several banks at once, as firmware does for an event."""
        if not 0 <= pcr <= 23:
            raise TpmError(f"PCR {pcr} does not exist.", "PCR indices are 0 to 23.")
        values = []
        for bank, digest in digests.items():
            if len(digest) != DIGEST_SIZES.get(bank, -1):
                raise TpmError(
                    f"A {bank} digest must be {DIGEST_SIZES.get(bank)} bytes, not {len(digest)}.",
                    "",
                )
            ha = TPMT_HA(hashAlg=_bank_alg(bank))
            setattr(ha.digest, bank, digest)
            values.append(ha)
        with self.doing(f"extend PCR {pcr}") as esapi:
            esapi.pcr_extend(ESYS_TR.PCR0 + pcr, TPML_DIGEST_VALUES(values))

    # -- hierarchy -------------------------------------------------------------------------
    def clear(self) -> None:
        """TPM2_Clear with the (empty) lockout authorization: new storage seed, keys gone."""
        with self.doing("clear (TPM2_Clear)") as esapi:
            esapi.clear(ESYS_TR.LOCKOUT)

    def get_random(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            with self.doing("generate random bytes") as esapi:
                out += bytes(esapi.get_random(min(32, size - len(out))))
        return out

    # -- endorsement key -------------------------------------------------------------------
    def _nv_read(self, index: int) -> bytes:
        esapi = self.esapi
        try:
            handle = esapi.tr_from_tpmpublic(index)
        except TSS2_Exception as err:
            if int(err.rc) & 0xFFF in (0x18B, 0x14B):  # TPM_RC_HANDLE / NV index not defined
                raise NoSuchIndex(index) from None
            raise
        try:
            pub, _ = esapi.nv_read_public(handle)
            size = int(pub.nvPublic.dataSize)
            data = b""
            while len(data) < size:
                chunk = min(512, size - len(data))
                data += bytes(esapi.nv_read(handle, chunk, len(data), auth_handle=handle))
            return data
        finally:
            with contextlib.suppress(Exception):
                esapi.tr_close(handle)

    def ek_certificate(self, kind: str = "rsa") -> bytes | None:
        """The EK certificate the manufacturer stored in NV, or None where there is none."""
        try:
            with self.doing("read the EK certificate"):
                return self._nv_read(EK_CERT_NV[kind])
        except NoSuchIndex:
            return None

    def ek_public(self, kind: str = "ecc") -> bytes:
        """The EK's public area (TPM2B_PUBLIC, marshalled), from the TCG default template."""
        with self.doing("create the endorsement key") as esapi:
            _, template = create_ek_template(_EK_TEMPLATES[kind], self._nv_read)
            handle, public, _, _, _ = esapi.create_primary(
                None, template, primary_handle=ESYS_TR.ENDORSEMENT
            )
            try:
                return bytes(TPM2B_PUBLIC(public.publicArea).marshal())
            finally:
                esapi.flush_context(handle)

    def ek_fingerprint(self, kind: str = "ecc") -> str:
        """SHA-256 of the EK's public area: an identity of this TPM (changes with a new TPM)."""
        return hashlib.sha256(self.ek_public(kind)).hexdigest()


def open_tpm(tcti: str | Tcti) -> Tpm:
    """Open the TPM named by a TCTI string; raise a TpmError with a remedy if it can't be."""
    parsed = parse_tcti(tcti) if isinstance(tcti, str) else tcti
    return Tpm(parsed).open()
