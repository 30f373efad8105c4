"""Talk to a swtpm through its unix control socket, the way QEMU does, while no VM uses it.

QEMU reaches swtpm over a control socket and hands it the data channel (``CMD_SET_DATAFD``, a
socket sent with ``SCM_RIGHTS``). The same works after QEMU is gone: a real-firmware lab host
(:mod:`hostseal.lab.vm`) uses it to clear the TPM while the VM is off, to read the PCRs the
firmware extended after the VM was killed, and to shut the TPM down in order (TPM2_Shutdown)
before its swtpm is stopped, so that unclean restarts do not trip dictionary-attack lockout.

TPM commands are sent as raw bytes (the few this needs are fixed or short); the responses'
codes are checked.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from hostseal.errors import HostsealError

# swtpm's control commands (swtpm's tpm_ioctl.h)
_CMD_INIT = 2
_CMD_SHUTDOWN = 3
_CMD_SET_DATAFD = 16

_TPM_ST_NO_SESSIONS = 0x8001
_TPM_ST_SESSIONS = 0x8002
_TPM_CC_STARTUP = 0x144
_TPM_CC_SHUTDOWN = 0x145
_TPM_CC_CLEAR = 0x126
_TPM_CC_PCR_READ = 0x17E
_TPM_SU_CLEAR = 0
_TPM_RH_LOCKOUT = 0x4000000A
_TPM_RS_PW = 0x40000009
_TPM_RC_INITIALIZE = 0x100  # TPM2_Startup when the TPM has already started
_BANK_ALG = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}


class TpmCtrlError(HostsealError):
    """swtpm did not answer on its control socket as expected."""


class _Channel:
    """A control connection plus the data channel handed over on it."""

    def __init__(self, ctrl: socket.socket, data: socket.socket) -> None:
        self.ctrl = ctrl
        self.data = data

    def control(self, cmd: int, payload: bytes = b"") -> None:
        self.ctrl.sendall(struct.pack(">I", cmd) + payload)
        result = struct.unpack(">I", _recv_exact(self.ctrl, 4))[0]
        if result != 0:
            raise TpmCtrlError(
                f"swtpm refused control command {cmd} (result {result:#x}).",
                "See the host's swtpm.log.",
            )

    def command(self, cc: int, body: bytes, tag: int = _TPM_ST_NO_SESSIONS) -> tuple[int, bytes]:
        """Send one TPM command; return (response code, response parameters)."""
        self.data.sendall(struct.pack(">HII", tag, 10 + len(body), cc) + body)
        _tag, size, rc = struct.unpack(">HII", _recv_exact(self.data, 10))
        return rc, _recv_exact(self.data, size - 10)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise TpmCtrlError(
                "swtpm closed its channel in the middle of an answer.",
                "See the host's swtpm.log; the swtpm process may have stopped.",
            )
        out += chunk
    return out


@contextlib.contextmanager
def channel(ctrl_path: Path, timeout: float = 10.0) -> Iterator[_Channel]:
    """Connect to swtpm's control socket and hand it a fresh data channel."""
    ctrl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctrl.settimeout(timeout)
    ours, theirs = socket.socketpair()
    ours.settimeout(timeout)
    try:
        try:
            ctrl.connect(str(ctrl_path))
        except OSError as err:
            raise TpmCtrlError(
                f"Cannot reach swtpm at {ctrl_path}: {err}.",
                "The host's TPM is not running; start the host.",
            ) from None
        ctrl.sendmsg(
            [struct.pack(">I", _CMD_SET_DATAFD)],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", theirs.fileno()))],
        )
        result = struct.unpack(">I", _recv_exact(ctrl, 4))[0]
        if result != 0:
            raise TpmCtrlError(
                f"swtpm refused the data channel (result {result:#x}).", "See swtpm.log."
            )
        theirs.close()
        yield _Channel(ctrl, ours)
    finally:
        ours.close()
        theirs.close()
        ctrl.close()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise TpmCtrlError(f"The TPM refused {what} (response code {rc:#x}).", "See swtpm.log.")


def power_on(ch: _Channel) -> None:
    """CMD_INIT and TPM2_Startup(CLEAR), as a platform reset does (PCRs reset)."""
    ch.control(_CMD_INIT, struct.pack(">I", 0))
    rc, _ = ch.command(_TPM_CC_STARTUP, struct.pack(">H", _TPM_SU_CLEAR))
    if rc != _TPM_RC_INITIALIZE:
        _check(rc, "TPM2_Startup")


def shutdown_and_stop(ch: _Channel) -> None:
    """TPM2_Shutdown(CLEAR) (an orderly shutdown), then swtpm exits (CMD_SHUTDOWN)."""
    rc, _ = ch.command(_TPM_CC_SHUTDOWN, struct.pack(">H", _TPM_SU_CLEAR))
    _check(rc, "TPM2_Shutdown")
    ch.control(_CMD_SHUTDOWN)


def clear(ch: _Channel) -> None:
    """TPM2_Clear with the (empty) lockout authorization: new storage seed, keys gone."""
    auth = struct.pack(">IHBH", _TPM_RS_PW, 0, 0, 0)
    body = struct.pack(">II", _TPM_RH_LOCKOUT, len(auth)) + auth
    rc, _ = ch.command(_TPM_CC_CLEAR, body, tag=_TPM_ST_SESSIONS)
    _check(rc, "TPM2_Clear")


def pcr_read(ch: _Channel, bank: str, pcrs: range = range(24)) -> dict[int, bytes]:
    """The values of ``pcrs`` in ``bank`` (the TPM answers at most 8 per call)."""
    alg = _BANK_ALG[bank]
    wanted = sorted(pcrs)
    values: dict[int, bytes] = {}
    while wanted:
        bitmap = bytearray(3)
        for pcr in wanted:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        rc, out = ch.command(_TPM_CC_PCR_READ, struct.pack(">IHB", 1, alg, 3) + bytes(bitmap))
        _check(rc, "TPM2_PCR_Read")
        # pcrUpdateCounter, then the selection actually read, then the digests
        count = struct.unpack_from(">I", out, 4)[0]
        offset = 8
        read: list[int] = []
        for _ in range(count):
            _alg, size = struct.unpack_from(">HB", out, offset)
            got = out[offset + 3 : offset + 3 + size]
            read += [i for i in range(size * 8) if got[i // 8] & (1 << (i % 8))]
            offset += 3 + size
        n = struct.unpack_from(">I", out, offset)[0]
        offset += 4
        digests = []
        for _ in range(n):
            size = struct.unpack_from(">H", out, offset)[0]
            digests.append(out[offset + 2 : offset + 2 + size])
            offset += 2 + size
        if not read:
            raise TpmCtrlError(f"The TPM has no {bank} PCR bank.", "Read another bank.")
        values.update(zip(read, digests, strict=True))
        wanted = [p for p in wanted if p not in values]
    return values
