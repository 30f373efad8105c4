"""state.tgz: round trip, determinism, hostile files refused."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from hostseal.secureconfig import (
    BundleCorrupt,
    EncryptionInfo,
    PayloadHeaderFields,
    RecoveryKey,
    build_state_tgz,
    bundle_file,
    decrypt_payload,
    encrypt_payload,
    open_recovery_slots,
    read_state_tgz,
)


@pytest.fixture()
def payload(data_key: bytes, info: EncryptionInfo) -> bytes:
    return encrypt_payload(data_key, b"archive", PayloadHeaderFields.from_info(info))


def test_round_trip(
    info: EncryptionInfo, payload: bytes, data_key: bytes, recovery_key: RecoveryKey
) -> None:
    state = build_state_tgz(info, payload, {"seal-eventlog.bin": b"\x00log"})
    got_info, got_payload, extras = read_state_tgz(state)
    assert got_info == info
    assert got_payload == payload
    assert extras == {"seal-eventlog.bin": b"\x00log"}
    key, _slot = open_recovery_slots(got_info.recovery_slots, recovery_key.secret)
    assert key == data_key
    expected = PayloadHeaderFields.from_info(got_info)
    assert decrypt_payload(key, got_payload, expected) == b"archive"


def test_layout_and_determinism(info: EncryptionInfo, payload: bytes) -> None:
    state = build_state_tgz(info, payload, {"seal-eventlog.bin": b"log"})
    assert state == build_state_tgz(info, payload, {"seal-eventlog.bin": b"log"})
    with tarfile.open(fileobj=io.BytesIO(state), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["encryption.info", "local.tgz.ve", "seal-eventlog.bin"]
    assert all(m.isreg() and m.mode == 0o600 and m.mtime == 0 for m in members)
    _, _, extras = read_state_tgz(build_state_tgz(info, payload))
    assert extras == {}


def test_build_refuses_unknown_extra(info: EncryptionInfo, payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"'notes\.txt' is not an allowed state\.tgz member"):
        build_state_tgz(info, payload, {"notes.txt": b""})
    allowed = frozenset({"notes.txt"})
    state = build_state_tgz(info, payload, {"notes.txt": b"n"}, allowed_extras=allowed)
    assert read_state_tgz(state, allowed_extras=allowed)[2] == {"notes.txt": b"n"}
    with pytest.raises(BundleCorrupt, match=r"unexpected member 'notes\.txt'"):
        read_state_tgz(state)


def tar_of(*members: tuple[str, bytes, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if isinstance(data, str):
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _info_bytes() -> bytes:
    import json

    from ._builders import tpm_info

    return json.dumps(json.loads(tpm_info(bytes(32)).to_json())).encode()


F = tarfile.REGTYPE
INFO = _info_bytes()
PAYLOAD = b"HSVE" + bytes(60)

HOSTILE = {
    "unknown member": (
        gzip.compress(tar_of(("encryption.info", F, INFO), ("../../etc/passwd", F, b"x"))),
        "state.tgz holds an unexpected member '../../etc/passwd'; it holds only "
        "encryption.info, local.tgz.ve, recovery-keys.ve, seal-eventlog.bin.",
    ),
    "duplicate": (
        gzip.compress(tar_of(("local.tgz.ve", F, PAYLOAD), ("local.tgz.ve", F, PAYLOAD))),
        "state.tgz holds the member 'local.tgz.ve' twice.",
    ),
    "symlink": (
        gzip.compress(tar_of(("encryption.info", tarfile.SYMTYPE, "/etc/shadow"))),
        "state.tgz member 'encryption.info' is not a regular file.",
    ),
    "hard link": (
        gzip.compress(tar_of(("local.tgz.ve", tarfile.LNKTYPE, "encryption.info"))),
        "state.tgz member 'local.tgz.ve' is not a regular file.",
    ),
    "directory": (
        gzip.compress(tar_of(("local.tgz.ve", tarfile.DIRTYPE, b""))),
        "state.tgz member 'local.tgz.ve' is not a regular file.",
    ),
    "missing info": (
        gzip.compress(tar_of(("local.tgz.ve", F, PAYLOAD))),
        "state.tgz has no 'encryption.info' member.",
    ),
    "missing payload": (
        gzip.compress(tar_of(("encryption.info", F, INFO))),
        "state.tgz has no 'local.tgz.ve' member.",
    ),
    "info too big": (
        gzip.compress(tar_of(("encryption.info", F, b" " * ((1 << 20) + 1)))),
        "state.tgz member 'encryption.info' is 1048577 bytes, more than the 1048576 allowed.",
    ),
    "truncated member": (
        gzip.compress(tar_of(("encryption.info", F, INFO))[:1024]),
        "state.tgz is truncated inside the member 'encryption.info'.",
    ),
    "not gzip": (
        tar_of(("encryption.info", F, INFO)),
        "state.tgz is not a valid gzip file: it does not start with the gzip signature.",
    ),
    "truncated gzip": (
        gzip.compress(tar_of(("encryption.info", F, INFO)))[:-12],
        "state.tgz is not a valid gzip file: the gzip stream is truncated.",
    ),
    "bad crc": (
        (lambda z: z[:-8] + bytes(4) + z[-4:])(gzip.compress(tar_of(("local.tgz.ve", F, b"")))),
        "state.tgz is not a valid gzip file: the gzip stream is damaged",
    ),
    "trailing data": (
        gzip.compress(tar_of(("encryption.info", F, INFO))) + b"junk",
        "state.tgz is not a valid gzip file: there are bytes after the end of the gzip stream.",
    ),
    "not a tar": (gzip.compress(b"\x01" * 600), "state.tgz is not a valid tar archive"),
    "empty": (b"", "state.tgz is not a valid gzip file"),
    "bad info": (
        gzip.compress(tar_of(("encryption.info", F, b"{}"), ("local.tgz.ve", F, PAYLOAD))),
        "encryption.info is missing the field 'format'.",
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_state_refused(case: str) -> None:
    data, message = HOSTILE[case]
    with pytest.raises(BundleCorrupt) as err:
        read_state_tgz(data)
    assert err.value.message.startswith(message), err.value.message
    assert err.value.remedy == "Restore the host configuration from a backup taken on this host."


def test_gzip_bomb_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_file, "MAX_STATE_BYTES", 1 << 20)
    bomb = gzip.compress(bytes(8 << 20))
    assert len(bomb) < 16_000
    with pytest.raises(BundleCorrupt, match="expands to more than 1048576 bytes"):
        read_state_tgz(bomb)


def test_extra_size_limit(
    monkeypatch: pytest.MonkeyPatch, info: EncryptionInfo, payload: bytes
) -> None:
    monkeypatch.setattr(bundle_file, "MAX_EXTRA_BYTES", 10)
    state = build_state_tgz(info, payload, {"seal-eventlog.bin": b"x" * 11})
    with pytest.raises(BundleCorrupt, match=r"'seal-eventlog\.bin' is 11 bytes, more than the 10"):
        read_state_tgz(state)
