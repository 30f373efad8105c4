"""swtpm processes for vTPMs: manufacture (``swtpm_setup``), run (``swtpm socket``), stop, and
move the permanent state from one key to another (for clones).

Keys reach swtpm only through pipes: ``swtpm_setup --keyfile-fd N`` (hex, as swtpm_setup passes
it on to swtpm) and ``swtpm socket --key fd=N,mode=aes-256-cbc,format=binary``. The pipe's
write end is filled and closed before swtpm starts; nothing touches a disk or a command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from hostseal import swtpmproc
from hostseal.swtpmproc import kill, pid_of
from hostseal.vtpm.errors import SwtpmFailed, VtpmError, VtpmRunning
from hostseal.vtpm.record import CIPHER

STATE_FILE = "tpm2-00.permall"
_INSTALL = "Install it: sudo apt-get install swtpm swtpm-tools (or run ./scripts/setup)."
_UNIX_PATH_MAX = 107

# swtpm control channel (include/swtpm/tpm_ioctl.h)
_CMD_INIT = 2
_CMD_SHUTDOWN = 3
_CMD_GET_STATEBLOB = 12
_CMD_SET_STATEBLOB = 13
_BLOB_PERMANENT = 1
_STATE_FLAG_DECRYPTED = 1


def require(tool: str) -> str:
    return swtpmproc.require(tool, "vTPMs")


def state_key(data_key: bytes) -> bytes:
    """The AES-256 key swtpm encrypts the state with (see ``record.STATE_KEY_KDF``)."""
    return hashlib.pbkdf2_hmac("sha512", data_key, b"swtpm", 1000, 32)


def _key_pipe(data: bytes) -> int:
    """A pipe holding ``data``; the read end is returned, the write end is closed."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # at most 64 bytes: never blocks
    finally:
        os.close(write_end)
    return read_end


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, text: str = "", offset: int = 0) -> str:
    """``text`` and what was appended to the log ``path`` after ``offset``, shortened."""
    with contextlib.suppress(OSError), path.open("rb") as log:
        log.seek(offset)
        text = (text + "\n" + log.read().decode(errors="replace")).strip()
    return text[-600:]


def run_setup(
    state_dir: Path,
    data_key: bytes,
    *,
    vmid: str,
    log: Path,
    banks: Sequence[str],
    config: Path | None,
    ek_cert_dir: Path | None,
) -> None:
    """``swtpm_setup``: a new TPM 2.0 with RSA and ECC EKs, certificates when ``config``
    names a certificate tool, NV locked, state encrypted with the data key's state key."""
    args = [
        require("swtpm_setup"),
        "--tpm2",
        "--tpmstate",
        str(state_dir),
        "--createek",
        "--lock-nvram",
        "--overwrite",
        "--pcr-banks",
        ",".join(banks),
        "--cipher",
        CIPHER,
        "--vmid",
        vmid,
        "--logfile",
        str(log),
    ]
    if config is not None:
        args += ["--create-ek-cert", "--create-platform-cert", "--config", str(config)]
    if ek_cert_dir is not None:
        args += ["--write-ek-cert-files", str(ek_cert_dir)]
    offset = _size(log)
    fd = _key_pipe(state_key(data_key).hex().encode())
    try:
        args += ["--keyfile-fd", str(fd)]
        result = subprocess.run(args, pass_fds=(fd,), capture_output=True, text=True, check=False)
    finally:
        os.close(fd)
    if result.returncode != 0:
        raise SwtpmFailed(
            f"swtpm_setup could not create the vTPM {vmid!r}: "
            f"{_tail(log, result.stderr or result.stdout, offset)}",
            f"See {log}. If the certificate tool failed, check hostseal's vTPM CA "
            "(hostseal vtpm ca show).",
        )


# -- running swtpm -------------------------------------------------------------------------


def check_socket_path(path: Path) -> None:
    if len(str(path).encode()) > _UNIX_PATH_MAX:
        raise VtpmError(
            f"The control socket path {path} is longer than a UNIX socket allows "
            f"({_UNIX_PATH_MAX} bytes).",
            "Use a shorter vTPM directory (HOSTSEAL_VTPM_DIR).",
        )


def launch(
    state_dir: Path,
    data_key: bytes,
    *,
    pidfile: Path,
    log: Path,
    ctrl: str,
    server: str | None,
    ready: tuple[str, object],
    not_need_init: bool,
) -> None:
    """``swtpm socket --daemon`` with the state key on a pipe; wait until it listens.

    ``ctrl``/``server`` are swtpm's ``--ctrl``/``--server`` values; ``ready`` is ("unix", path)
    or ("tcp", port) to wait for.
    """
    args = [
        require("swtpm"),
        "socket",
        "--tpm2",
        "--tpmstate",
        f"dir={state_dir}",
        "--ctrl",
        ctrl,
        "--pid",
        f"file={pidfile}",
        "--log",
        f"file={log},level=1",
        "--daemon",
    ]
    if server is not None:
        args += ["--server", server]
    if not_need_init:
        args += ["--flags", "not-need-init,startup-clear"]
    pidfile.unlink(missing_ok=True)
    offset = _size(log)
    fd = _key_pipe(state_key(data_key))
    try:
        args += ["--key", f"fd={fd},mode={CIPHER},format=binary"]
        result = subprocess.run(args, pass_fds=(fd,), capture_output=True, text=True, check=False)
    finally:
        os.close(fd)
    if result.returncode != 0 or not _wait_ready(ready):
        pid = pid_of(pidfile, state_dir)
        if pid is not None:
            kill(pid)
        text = _tail(log, result.stderr or result.stdout, offset)
        if "lock" in text.lower():
            raise VtpmRunning(
                f"The vTPM state in {state_dir} is in use by another swtpm.",
                "Stop the vTPM (or the VM using it) first.",
            )
        if "HMAC" in text or "decrypt" in text.lower() or "libtpms" in text:
            raise SwtpmFailed(
                f"swtpm could not open the vTPM state in {state_dir} with its key: {text}",
                "The key provider returned another key than the one this state was "
                "encrypted with, or the state is damaged: restore the vTPM from a backup.",
            )
        raise SwtpmFailed(f"swtpm did not start: {text or 'no answer'}", f"See {log}.")


def _wait_ready(ready: tuple[str, object], timeout: float = 5.0) -> bool:
    kind, where = ready
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if kind == "tcp":
                with socket.create_connection(("127.0.0.1", int(str(where))), 0.2):
                    return True
            else:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(where))
                    return True
        time.sleep(0.01)
    return False


# -- control channel: moving the permanent state to another key -----------------------------


class _Ctrl:
    """A connection to swtpm's control channel on a UNIX socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))

    def close(self) -> None:
        self.sock.close()

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise SwtpmFailed("swtpm closed its control channel.", "See its log.")
            data += chunk
        return data

    def get_permanent_state(self) -> bytes:
        request = struct.pack(
            ">IIII", _CMD_GET_STATEBLOB, _STATE_FLAG_DECRYPTED, _BLOB_PERMANENT, 0
        )
        self.sock.sendall(request)
        (result,) = struct.unpack(">I", self._recv(4))
        if result == 0:
            _flags, _total, length = struct.unpack(">III", self._recv(12))
        else:
            raise SwtpmFailed(
                f"swtpm could not read the vTPM state (TPM result 0x{result:x}).",
                "The key does not open the state, or the state is damaged.",
            )
        return self._recv(length)

    def set_permanent_state(self, blob: bytes) -> None:
        header = struct.pack(">IIII", _CMD_SET_STATEBLOB, 0, _BLOB_PERMANENT, len(blob))
        self.sock.sendall(header + blob)
        (result,) = struct.unpack(">I", self._recv(4))
        if result != 0:
            raise SwtpmFailed(
                f"swtpm refused the vTPM state (TPM result 0x{result:x}).", "See its log."
            )

    def init(self) -> None:
        """CMD_INIT: libtpms starts on the state set, and writes it out under its key."""
        self.sock.sendall(struct.pack(">II", _CMD_INIT, 0))
        (result,) = struct.unpack(">I", self._recv(4))
        if result != 0:
            raise SwtpmFailed(
                f"swtpm could not start on the copied state (TPM result 0x{result:x}).",
                "See its log.",
            )

    def shutdown(self) -> None:
        self.sock.sendall(struct.pack(">I", _CMD_SHUTDOWN))
        self._recv(4)


@contextlib.contextmanager
def _ctrl_only(
    state_dir: Path, data_key: bytes, work: Path, tag: str, running: bool
) -> Iterator[_Ctrl]:
    """A swtpm on ``state_dir`` with only a control socket; the TPM initialised when
    ``running`` (reading state needs it), not when writing state (which needs it stopped)."""
    sock = work / f"{tag}.sock"
    pidfile = work / f"{tag}.pid"
    check_socket_path(sock)
    launch(
        state_dir,
        data_key,
        pidfile=pidfile,
        log=work / f"{tag}.log",
        ctrl=f"type=unixio,path={sock},mode=0600",
        server=None,
        ready=("unix", sock),
        not_need_init=running,
    )
    ctrl = _Ctrl(sock)
    try:
        yield ctrl
    finally:
        with contextlib.suppress(OSError, SwtpmFailed):
            ctrl.shutdown()
        ctrl.close()
        pid = pid_of(pidfile, state_dir)
        if pid is not None:
            kill(pid)


def reencrypt(src_state: Path, src_key: bytes, dst_state: Path, dst_key: bytes, work: Path) -> None:
    """Write ``src_state``'s permanent state into the empty ``dst_state`` under ``dst_key``.

    One swtpm reads the state decrypted (it stays in this process's memory), a second one,
    started with the new key, stores it: the plaintext never reaches a disk.
    """
    copy = work / "src-state"  # swtpm rewrites the state it starts on: use a (ciphertext) copy
    copy.mkdir(mode=0o700)
    shutil.copy2(src_state / STATE_FILE, copy / STATE_FILE)
    with _ctrl_only(copy, src_key, work, "src", running=True) as src:
        blob = src.get_permanent_state()
    with _ctrl_only(dst_state, dst_key, work, "dst", running=False) as dst:
        dst.set_permanent_state(blob)
        dst.init()
    if not (dst_state / STATE_FILE).is_file():
        raise SwtpmFailed("swtpm did not write the copied vTPM state.", f"See {work}/dst.log.")
