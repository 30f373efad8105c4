"""vTPM lifecycle: create, start, stop, status, list, remove, clone.

Every operation takes the installation's :class:`~hostseal.vtpm.paths.VtpmDirs` and a
:class:`~hostseal.keyprovider.ProviderStore` (whose release gate, when configured, is asked
before any key is given out).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hostseal import swtpmproc
from hostseal.keyprovider import DataKey, KeyProvider, ProviderStore
from hostseal.vtpm import ca as _ca
from hostseal.vtpm import swtpm
from hostseal.vtpm.errors import VtpmError, VtpmExists, VtpmRunning
from hostseal.vtpm.paths import VtpmDirs, check_vm_name
from hostseal.vtpm.record import Runtime, VtpmRecord, load, now

DEFAULT_BANKS = ("sha256",)
_EK_FILES = {"ek-rsa2048.crt": "rsa", "ek-rsa3072.crt": "rsa", "ek-secp384r1.crt": "ecc"}


@dataclass
class VtpmStatus:
    record: VtpmRecord
    path: Path
    pid: int | None
    runtime: Runtime | None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def to_dict(self) -> dict[str, object]:
        run = self.runtime.to_dict() if self.running and self.runtime else None
        return {
            "name": self.record.name,
            "path": str(self.path),
            "running": self.running,
            "pid": self.pid,
            "runtime": run,
            "tcti": run["tcti"] if run else None,
            "socket": str(self.path / "swtpm.sock"),
            "uuid": self.record.uuid,
            "key_provider": self.record.provider,
            "key_id": self.record.key_id,
            "encrypted": f"{self.record.cipher} (key from provider {self.record.provider})",
            "pcr_banks": self.record.pcr_banks,
            "ek_certificate_sha256": self.record.ek_fingerprints(),
            "ca_sha256": self.record.ca_fingerprint,
            "created": self.record.created,
            "origin": self.record.origin,
        }


@contextlib.contextmanager
def _locked(vm_dir: Path) -> Iterator[None]:
    """One operation at a time on a vTPM."""
    with open(vm_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _state(vm_dir: Path) -> Path:
    return vm_dir / "state"


def _pid(vm_dir: Path) -> int | None:
    return swtpmproc.pid_of(vm_dir / "swtpm.pid", _state(vm_dir))


def _existing(dirs: VtpmDirs, name: str) -> Path:
    vm_dir = dirs.vm(name)
    load(vm_dir)  # raises VtpmNotFound with a remedy
    return vm_dir


def _claim(dirs: VtpmDirs, name: str) -> Path:
    """Create the (empty) directory of a new vTPM; refuse when it exists."""
    dirs.ensure()
    vm_dir = dirs.vm(name)
    try:
        vm_dir.mkdir(mode=0o700)
    except FileExistsError:
        raise VtpmExists(
            f"A vTPM named {name!r} exists already ({vm_dir}).",
            f"Choose another name, or remove it first: hostseal vtpm remove {name}",
        ) from None
    return vm_dir


def _key(providers: ProviderStore, record: VtpmRecord) -> DataKey:
    return providers.open(record.provider).key_for_record(record.key)


def _manufacture(
    dirs: VtpmDirs,
    providers: ProviderStore,
    provider: KeyProvider,
    vm_dir: Path,
    name: str,
    banks: tuple[str, ...],
) -> tuple[DataKey, dict[str, str], str]:
    """swtpm_setup in ``vm_dir/state`` with certificates from hostseal's CA."""
    if not _ca.exists(dirs.ca):
        _ca.create(dirs.ca, provider)
    data_key = provider.create_key(f"vtpm:{name}")
    state = _state(vm_dir)
    state.mkdir(mode=0o700)
    with tempfile.TemporaryDirectory(prefix=".setup-", dir=vm_dir) as work_name:
        work = Path(work_name)
        certs = work / "certs"
        certs.mkdir()
        with _ca.cert_tool_config(dirs.ca, providers, work) as config:
            swtpm.run_setup(
                state,
                data_key.material,
                vmid=name,
                log=vm_dir / "swtpm_setup.log",
                banks=banks,
                config=config,
                ek_cert_dir=certs,
            )
        ek_certs = {
            kind: _b64(certs / filename)
            for filename, kind in _EK_FILES.items()
            if (certs / filename).is_file()
        }
    return data_key, ek_certs, _ca.fingerprint(_ca.certificate(dirs.ca))


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode("ascii")


def create(
    dirs: VtpmDirs,
    providers: ProviderStore,
    name: str,
    key_provider: str | None = None,
    banks: tuple[str, ...] = DEFAULT_BANKS,
    origin: dict[str, object] | None = None,
) -> VtpmRecord:
    """A new vTPM: TPM 2.0 with RSA and ECC EKs and certificates from hostseal's CA, NV
    locked, state encrypted with a new data key from the key provider."""
    check_vm_name(name)
    provider = providers.open(key_provider)
    vm_dir = _claim(dirs, name)
    data_key: DataKey | None = None
    try:
        data_key, ek_certs, ca_print = _manufacture(dirs, providers, provider, vm_dir, name, banks)
        record = VtpmRecord(
            name=name,
            uuid=str(uuid.uuid4()),
            key=provider.key_record(data_key),
            pcr_banks=list(banks),
            ek_certificates=ek_certs,
            ca_fingerprint=ca_print,
            origin=origin or {"kind": "created"},
        )
        record.save(vm_dir)
        return record
    except BaseException:
        shutil.rmtree(vm_dir, ignore_errors=True)
        if data_key is not None:
            with contextlib.suppress(Exception):
                provider.destroy_key(data_key.key_id)
        raise


def start(dirs: VtpmDirs, providers: ProviderStore, name: str, tcp: bool = False) -> VtpmStatus:
    """Run the vTPM's swtpm with its key on a pipe.

    Default: a control socket ``swtpm.sock`` for QEMU/libvirt (QEMU initialises the TPM).
    ``tcp``: a TCP port pair on 127.0.0.1 for the TCTI ``swtpm:host=127.0.0.1,port=N`` (direct
    use and tests; the TPM is started, TPM2_Startup done).
    """
    vm_dir = _existing(dirs, name)
    with _locked(vm_dir):
        record = load(vm_dir)
        if _pid(vm_dir) is not None:
            raise VtpmRunning(
                f"vTPM {name!r} is already running.", f"See: hostseal vtpm status {name}"
            )
        data_key = _key(providers, record)
        sock = vm_dir / "swtpm.sock"
        sock.unlink(missing_ok=True)
        common = {"pidfile": vm_dir / "swtpm.pid", "log": vm_dir / "swtpm.log"}
        if tcp:
            last: VtpmError | None = None
            for _attempt in range(5):
                port, ctrl_port = swtpmproc.free_port_pair()
                try:
                    swtpm.launch(
                        _state(vm_dir),
                        data_key.material,
                        ctrl=f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
                        server=f"type=tcp,port={port},bindaddr=127.0.0.1",
                        ready=("tcp", port),
                        not_need_init=True,
                        **common,
                    )
                except VtpmError as err:
                    last = err
                    if "did not start" not in err.message:
                        raise
                    continue
                runtime = Runtime("tcp", port=port, ctrl_port=ctrl_port)
                break
            else:
                assert last is not None
                raise last
        else:
            swtpm.check_socket_path(sock)
            swtpm.launch(
                _state(vm_dir),
                data_key.material,
                ctrl=f"type=unixio,path={sock},mode=0600",
                server=None,
                ready=("unix", sock),
                not_need_init=False,
                **common,
            )
            runtime = Runtime("unix", socket=str(sock))
        runtime.save(vm_dir)
        return VtpmStatus(record, vm_dir, _pid(vm_dir), runtime)


def stop(dirs: VtpmDirs, name: str) -> VtpmStatus:
    """Stop the vTPM's swtpm (its permanent state is on disk, encrypted)."""
    vm_dir = _existing(dirs, name)
    with _locked(vm_dir):
        pid = _pid(vm_dir)
        if pid is not None:
            swtpmproc.kill(pid)
        for leftover in ("swtpm.pid", "run.json", "swtpm.sock"):
            (vm_dir / leftover).unlink(missing_ok=True)
        return VtpmStatus(load(vm_dir), vm_dir, None, None)


def status(dirs: VtpmDirs, name: str) -> VtpmStatus:
    vm_dir = _existing(dirs, name)
    return VtpmStatus(load(vm_dir), vm_dir, _pid(vm_dir), Runtime.load(vm_dir))


def list_vtpms(dirs: VtpmDirs) -> list[VtpmStatus]:
    if not dirs.vms.is_dir():
        return []
    return [status(dirs, p.name) for p in sorted(dirs.vms.iterdir()) if (p / "vtpm.json").is_file()]


def _wipe(path: Path) -> None:
    """Overwrite every file under ``path`` with random bytes, then delete the tree. (On
    copy-on-write or flash storage old blocks may survive; the state is ciphertext anyway.)"""
    for root, _dirs, files in os.walk(path):
        for filename in files:
            file = Path(root) / filename
            with contextlib.suppress(OSError):
                size = file.stat().st_size
                with open(file, "r+b") as handle:
                    handle.write(os.urandom(size))
                    handle.flush()
                    os.fsync(handle.fileno())
    shutil.rmtree(path)


def remove(dirs: VtpmDirs, providers: ProviderStore, name: str, destroy_key: bool = False) -> None:
    """Stop the vTPM and wipe its state. With ``destroy_key`` its data key is destroyed at the
    provider too (then no backup of it can be restored)."""
    vm_dir = _existing(dirs, name)
    record = load(vm_dir)
    stop(dirs, name)
    _wipe(vm_dir)
    if destroy_key:
        providers.raw(record.provider).destroy_key(record.key_id)


def clone(
    dirs: VtpmDirs,
    providers: ProviderStore,
    source: str,
    target: str,
    policy: str,
    key_provider: str | None = None,
) -> VtpmRecord:
    """``copy``: the same TPM (EK, seeds, NV, keys) under a new data key. ``replace``: a new,
    empty vTPM with its own EK and certificate."""
    src_dir = _existing(dirs, source)
    src = load(src_dir)
    origin: dict[str, object] = {"kind": f"clone-{policy}", "from": source, "at": now()}
    if policy == "replace":
        return create(
            dirs,
            providers,
            target,
            key_provider or src.provider,
            tuple(src.pcr_banks),
            origin=origin,
        )
    if policy != "copy":
        raise VtpmError(f"Unknown clone policy {policy!r}.", "Use --policy copy or replace.")
    check_vm_name(target)
    with _locked(src_dir):
        if _pid(src_dir) is not None:
            raise VtpmRunning(
                f"vTPM {source!r} is running; a copy needs it stopped (its state must not "
                "change while it is copied).",
                f"Stop it (shut the VM down, or hostseal vtpm stop {source}), then clone again.",
            )
        src_key = _key(providers, src)
        provider = providers.open(key_provider or src.provider)
        dst_dir = _claim(dirs, target)
        new_key: DataKey | None = None
        try:
            new_key = provider.create_key(f"vtpm:{target}")
            _state(dst_dir).mkdir(mode=0o700)
            with tempfile.TemporaryDirectory(prefix=".clone-", dir=dst_dir) as work:
                swtpm.reencrypt(
                    _state(src_dir), src_key.material, _state(dst_dir), new_key.material, Path(work)
                )
            record = VtpmRecord(
                name=target,
                uuid=str(uuid.uuid4()),
                key=provider.key_record(new_key),
                pcr_banks=list(src.pcr_banks),
                ek_certificates=dict(src.ek_certificates),
                ca_fingerprint=src.ca_fingerprint,
                origin=origin,
            )
            record.save(dst_dir)
            return record
        except BaseException:
            shutil.rmtree(dst_dir, ignore_errors=True)
            if new_key is not None:
                with contextlib.suppress(Exception):
                    provider.destroy_key(new_key.key_id)
            raise
