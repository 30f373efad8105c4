"""Bounded fuzzing of every parser of outside bytes: only the module's own errors may escape."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostseal.secureconfig import (
    BundleCorrupt,
    EncryptionInfo,
    Mode,
    PayloadAuthenticationFailed,
    PayloadHeaderFields,
    RecoveryIdMalformed,
    RecoveryKeyError,
    Requirements,
    UnpackRefused,
    UnsafeArchive,
    build_state_tgz,
    decrypt_payload,
    encrypt_payload,
    format_recovery_key,
    parse_recovery_id,
    parse_recovery_key,
    read_state_tgz,
    unpack_to,
)

from ._builders import tpm_info

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEY = bytes(range(32))
FIELDS = PayloadHeaderFields(3, Mode.TPM, Requirements(True, True))
BLOB = encrypt_payload(KEY, b"x" * 40, FIELDS)
INFO = tpm_info(KEY, *[])
INFO_JSON = INFO.to_json()
STATE = build_state_tgz(INFO, BLOB, {"seal-eventlog.bin": b"log"})
STATE_TAR = gzip.decompress(STATE)


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        spec: list[tuple[str, bytes, bytes | str]] = [
            ("d", tarfile.DIRTYPE, b""),
            ("d/f", tarfile.REGTYPE, b"hello"),
            ("d/l", tarfile.SYMTYPE, "f"),
        ]
        for name, kind, data in spec:
            info = tarfile.TarInfo(name)
            info.type = kind
            if isinstance(data, str):
                info.linkname = data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE_TAR = _archive()

edits = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8)


def mutate(data: bytes, changes: list[tuple[int, int]], cut: int | None = None) -> bytes:
    out = bytearray(data)
    for pos, value in changes:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=120).map(lambda b: b"HSVE" + b)))
def test_decrypt_payload_random(blob: bytes) -> None:
    with pytest.raises((BundleCorrupt, PayloadAuthenticationFailed)):
        decrypt_payload(KEY, blob)


@FUZZ
@given(edits, st.one_of(st.none(), st.integers(0, len(BLOB))))
def test_decrypt_payload_mutated(changes: list[tuple[int, int]], cut: int | None) -> None:
    blob = mutate(BLOB, changes, cut)
    try:
        assert decrypt_payload(KEY, blob, FIELDS) == b"x" * 40
        assert blob == BLOB
    except (BundleCorrupt, PayloadAuthenticationFailed):
        pass


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=2000).map(gzip.compress),
        st.binary(max_size=200).map(lambda b: b"\x1f\x8b" + b),
    )
)
def test_read_state_tgz_random(data: bytes) -> None:
    with pytest.raises(BundleCorrupt):
        read_state_tgz(data)


@FUZZ
@given(edits, st.one_of(st.none(), st.integers(0, len(STATE_TAR))), st.booleans())
def test_read_state_tgz_mutated(
    changes: list[tuple[int, int]], cut: int | None, compressed_edit: bool
) -> None:
    if compressed_edit:
        data = mutate(STATE, changes, None if cut is None else cut % (len(STATE) + 1))
    else:
        data = gzip.compress(mutate(STATE_TAR, changes, cut))
    try:
        info, payload, extras = read_state_tgz(data)
    except BundleCorrupt:
        return
    assert isinstance(info, EncryptionInfo)
    assert isinstance(payload, memoryview)
    assert set(extras) <= {"seal-eventlog.bin", "recovery-keys.ve"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_info_from_json_random(data: bytes) -> None:
    with pytest.raises(BundleCorrupt):
        EncryptionInfo.from_json(data)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


DOC = json.loads(INFO_JSON)
DOC_PATHS = [p for p in _paths(DOC) if p]


@FUZZ
@given(st.sampled_from(DOC_PATHS), json_values, st.booleans())
def test_info_from_json_mutated(path: tuple[Any, ...], value: object, delete: bool) -> None:
    doc = json.loads(INFO_JSON)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with contextlib.suppress(BundleCorrupt):
        EncryptionInfo.from_json(json.dumps(doc).encode())


@FUZZ
@given(
    st.one_of(
        st.text(max_size=150),
        st.text(alphabet="0123456789- \n", max_size=150),
        st.binary(min_size=32, max_size=32).map(format_recovery_key),
    )
)
def test_parse_recovery_key(text: str) -> None:
    with contextlib.suppress(RecoveryKeyError):
        assert len(parse_recovery_key(text)) == 32


@FUZZ
@given(st.one_of(st.text(max_size=60), st.uuids().map(lambda u: "{" + str(u) + "}")))
def test_parse_recovery_id(text: str) -> None:
    with contextlib.suppress(RecoveryIdMalformed):
        parse_recovery_id(text)


@settings(FUZZ, max_examples=150)
@given(edits, st.one_of(st.none(), st.integers(0, len(ARCHIVE_TAR))))
def test_unpack_mutated(changes: list[tuple[int, int]], cut: int | None) -> None:
    archive = mutate(ARCHIVE_TAR, changes, cut)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out"
        try:
            unpack_to(archive, dest)
        except (UnsafeArchive, UnpackRefused):
            return
        for path in dest.rglob("*"):
            assert path.resolve().is_relative_to(dest.resolve())


components = st.one_of(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["a", "b", "..", "."]),
    st.sampled_from(["", "/", "c d", "é"]),
)
member_names = st.lists(components, min_size=1, max_size=4).map("/".join)
link_targets = st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=5).map(
    "/".join
)
members = st.lists(
    st.tuples(
        member_names,
        st.sampled_from(
            [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]
        ),
        link_targets,
    ),
    min_size=1,
    max_size=6,
)


@settings(FUZZ, max_examples=200)
@given(members)
def test_unpack_random_members(entries: list[tuple[str, bytes, str]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out"
        try:
            unpack_to(buf.getvalue(), dest)
        except (UnsafeArchive, UnpackRefused):
            assert not dest.exists()
            return
        root = dest.resolve()
        for path in dest.rglob("*"):
            assert path.resolve().is_relative_to(root)
