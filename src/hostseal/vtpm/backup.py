"""vTPM backups: the encrypted state plus what is needed to obtain its key again.

A backup file (JSON, format ``hostseal-vtpm-backup`` version 1) is::

    {"format": ..., "version": 1, "sha256": "<hex>", "content": "<base64>"}

``sha256`` is computed over the exact bytes ``content`` decodes to, and is checked first. The
content (JSON) holds the vTPM record -- with its key record: provider name and kind, key id, key
check value, and for a native provider the data key wrapped by the provider's KEK -- and every
state file, as swtpm wrote it (ciphertext). The key is never in the backup in clear.

A restore checks the file's integrity and that the key can be obtained (and is the right key)
**before writing anything**; then it writes the vTPM into a temporary directory and renames it
into place, so a failed restore leaves nothing behind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hostseal import __version__
from hostseal.fsutil import atomic_write, fsync_dir
from hostseal.keyprovider import ProviderStore
from hostseal.vtpm.errors import VtpmBackupDamaged, VtpmExists, VtpmRunning
from hostseal.vtpm.lifecycle import _existing, _locked, _pid, _state
from hostseal.vtpm.paths import VtpmDirs, check_vm_name
from hostseal.vtpm.record import VtpmRecord, load, now

FORMAT = "hostseal-vtpm-backup"
VERSION = 1


def backup(dirs: VtpmDirs, name: str, out: Path) -> dict[str, object]:
    """Write the backup of a stopped vTPM to ``out`` (mode 0600)."""
    vm_dir = _existing(dirs, name)
    with _locked(vm_dir):
        if _pid(vm_dir) is not None:
            raise VtpmRunning(
                f"vTPM {name!r} is running; its backup needs it stopped (or its state may be "
                "caught half-written).",
                f"Shut the VM down (or hostseal vtpm stop {name}), then back up again.",
            )
        record = load(vm_dir)
        state = {
            p.name: base64.b64encode(p.read_bytes()).decode("ascii")
            for p in sorted(_state(vm_dir).iterdir())
            if p.is_file() and not p.name.startswith(".")
        }
    content = json.dumps(
        {"record": record.to_dict(), "state": state, "created": now(), "hostseal": __version__},
        indent=1,
    ).encode()
    digest = hashlib.sha256(content).hexdigest()
    document = {
        "format": FORMAT,
        "version": VERSION,
        "sha256": digest,
        "content": base64.b64encode(content).decode("ascii"),
    }
    atomic_write(out, json.dumps(document).encode() + b"\n", mode=0o600)
    return {"name": name, "file": str(out), "sha256": digest, "key": record.key}


def _damaged(why: str) -> VtpmBackupDamaged:
    return VtpmBackupDamaged(
        f"This is not a usable vTPM backup: {why}. Nothing was written.",
        "Use another copy of the backup (hostseal vtpm backup writes them).",
    )


def read_backup(data: bytes) -> tuple[VtpmRecord, dict[str, bytes]]:
    """Check a backup's format and checksum, then parse it."""
    try:
        document = json.loads(data)
    except ValueError:
        raise _damaged("the file is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _damaged("the file is not a hostseal vTPM backup")
    if document.get("version") != VERSION:
        raise _damaged(f"format version {document.get('version')!r} is not supported")
    try:
        content = base64.b64decode(str(document["content"]), validate=True)
        expected = str(document["sha256"])
    except (KeyError, binascii.Error):
        raise _damaged("its content is not readable") from None
    if hashlib.sha256(content).hexdigest() != expected:
        raise _damaged("its SHA-256 checksum does not match its content (it was changed)")
    try:
        body: dict[str, Any] = json.loads(content)
        record = VtpmRecord.from_dict(body["record"])
        state = {str(k): base64.b64decode(v, validate=True) for k, v in body["state"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise _damaged("its content is not a vTPM record and state") from None
    if not state or any("/" in k or k.startswith(".") for k in state):
        raise _damaged("it holds no state, or state file names that are not plain names")
    return record, state


def restore(
    dirs: VtpmDirs,
    providers: ProviderStore,
    data: bytes,
    name: str | None = None,
    key_provider: str | None = None,
) -> VtpmRecord:
    """Restore a backup as vTPM ``name`` (default: its original name) in ``dirs``.

    ``key_provider`` overrides the provider named in the backup (same key, other name here).
    """
    record, state = read_backup(data)
    original = record.name
    target = name or original
    check_vm_name(target)
    vm_dir = dirs.vm(target)
    if vm_dir.exists() and any(vm_dir.iterdir()):
        raise VtpmExists(
            f"A vTPM named {target!r} exists already ({vm_dir}); nothing was written.",
            f"Restore under another name (--name), or remove it first: hostseal vtpm remove "
            f"{target}",
        )
    key_record = dict(record.key)
    if key_provider:
        key_record["provider"] = key_provider
    provider = providers.open(str(key_record.get("provider")))
    provider.key_for_record(key_record)  # raises when the key cannot be obtained: nothing written

    # -- from here on, writing --------------------------------------------------------------
    dirs.ensure()
    provider.adopt_key(key_record)
    record.key = key_record
    record.name = target
    if target != original:
        record.uuid = str(uuid.uuid4())
    record.origin = {"kind": "restored", "from": original, "at": now()}
    tmp = Path(tempfile.mkdtemp(prefix=f".restore-{target}-", dir=dirs.vms))
    try:
        os.chmod(tmp, 0o700)
        (tmp / "state").mkdir(mode=0o700)
        for filename, content in state.items():
            atomic_write(tmp / "state" / filename, content, mode=0o600)
        record.save(tmp)
        if vm_dir.exists():
            vm_dir.rmdir()  # empty (checked above)
        tmp.rename(vm_dir)
        fsync_dir(dirs.vms)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
