"""local.tgz.ve: AES-256-GCM with the whole header authenticated."""

from __future__ import annotations

import dataclasses
import struct
import subprocess
from pathlib import Path

import pytest

from hostseal.secureconfig import (
    PAYLOAD_MAGIC,
    BundleCorrupt,
    BundleMismatch,
    EncryptionInfo,
    Mode,
    PayloadAuthenticationFailed,
    PayloadHeaderFields,
    Requirements,
    decrypt_payload,
    encrypt_payload,
    generate_data_key,
    pack_dirs,
    read_payload_header,
)
from hostseal.secureconfig.payload import PAYLOAD_HEADER_SIZE

FIELDS = PayloadHeaderFields(7, Mode.TPM, Requirements(True, False))
PLAINTEXT = b"configuration archive bytes " * 10


@pytest.fixture()
def blob(data_key: bytes) -> bytes:
    return encrypt_payload(data_key, PLAINTEXT, FIELDS)


def test_round_trip(data_key: bytes, blob: bytes) -> None:
    assert decrypt_payload(data_key, blob) == PLAINTEXT
    assert decrypt_payload(data_key, blob, FIELDS) == PLAINTEXT
    assert PLAINTEXT[:16] not in blob


def test_header_layout(blob: bytes) -> None:
    assert PAYLOAD_HEADER_SIZE == 36
    magic, version, flags, generation, _nonce, length = struct.unpack(">4sHHQ12sQ", blob[:36])
    assert (magic, version, flags, generation) == (b"HSVE", 1, 0b011, 7)
    assert length == len(PLAINTEXT) + 16 == len(blob) - 36
    header = read_payload_header(blob)
    assert header.fields == FIELDS
    assert header.raw == blob[:36]


def test_fresh_nonce_every_time(data_key: bytes) -> None:
    a = encrypt_payload(data_key, PLAINTEXT, FIELDS)
    b = encrypt_payload(data_key, PLAINTEXT, FIELDS)
    assert a[16:28] != b[16:28]
    assert a[36:] != b[36:]


def test_empty_plaintext(data_key: bytes) -> None:
    blob = encrypt_payload(data_key, b"", FIELDS)
    assert len(blob) == 36 + 16
    assert decrypt_payload(data_key, blob) == b""


def test_every_header_byte_is_protected(data_key: bytes, blob: bytes) -> None:
    for i in range(PAYLOAD_HEADER_SIZE):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            with pytest.raises((BundleCorrupt, PayloadAuthenticationFailed)):
                decrypt_payload(data_key, bytes(bad))


def test_flag_flip_fails_authentication(data_key: bytes, blob: bytes) -> None:
    bad = bytearray(blob)
    bad[7] ^= 0b010  # drop "require Secure Boot"
    with pytest.raises(PayloadAuthenticationFailed) as err:
        decrypt_payload(data_key, bytes(bad))
    assert err.value.message == (
        "local.tgz.ve failed authentication: its bytes were changed or damaged, or the key used "
        "is not the one it was saved with."
    )
    assert err.value.remedy == "Restore state.tgz from a backup taken on this host."


def test_ciphertext_tamper(data_key: bytes, blob: bytes) -> None:
    for i in range(PAYLOAD_HEADER_SIZE, len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x04
        with pytest.raises(PayloadAuthenticationFailed):
            decrypt_payload(data_key, bytes(bad))


def test_wrong_key(blob: bytes) -> None:
    with pytest.raises(PayloadAuthenticationFailed):
        decrypt_payload(generate_data_key(), blob)


def test_truncation_and_trailing_bytes(data_key: bytes, blob: bytes) -> None:
    for n in range(len(blob)):
        with pytest.raises(BundleCorrupt, match="truncated"):
            decrypt_payload(data_key, blob[:n])
    with pytest.raises(BundleCorrupt) as err:
        decrypt_payload(data_key, blob + b"\x00")
    assert err.value.message == "local.tgz.ve has 1 unexpected bytes after its ciphertext."


HEADER_CASES = {
    "gzip": (
        b"\x1f\x8b\x08\x00" + bytes(60),
        "local.tgz.ve does not start with b'HSVE' (found b'\\x1f\\x8b\\x08\\x00'): it is not "
        "an encrypted hostseal configuration.",
    ),
    "version 2": (
        PAYLOAD_MAGIC + struct.pack(">HHQ12sQ", 2, 0, 0, bytes(12), 16) + bytes(16),
        "local.tgz.ve has format version 2; this hostseal reads version 1 only.",
    ),
    "unknown flag": (
        PAYLOAD_MAGIC + struct.pack(">HHQ12sQ", 1, 8, 0, bytes(12), 16) + bytes(16),
        "local.tgz.ve has unknown header flags 0x0008.",
    ),
    "short length": (
        PAYLOAD_MAGIC + struct.pack(">HHQ12sQ", 1, 0, 0, bytes(12), 15) + bytes(15),
        "local.tgz.ve declares an impossible ciphertext length 15.",
    ),
    "huge length": (
        PAYLOAD_MAGIC + struct.pack(">HHQ12sQ", 1, 0, 0, bytes(12), 2**64 - 1) + bytes(16),
        "local.tgz.ve is truncated: its header declares 18446744073709551615 bytes",
    ),
    "huge generation": (
        PAYLOAD_MAGIC + struct.pack(">HHQ12sQ", 1, 0, 2**64 - 1, bytes(12), 16) + bytes(16),
        "local.tgz.ve has an impossible generation",
    ),
}


@pytest.mark.parametrize("case", HEADER_CASES, ids=list(HEADER_CASES))
def test_header_errors(data_key: bytes, case: str) -> None:
    blob, message = HEADER_CASES[case]
    with pytest.raises(BundleCorrupt) as err:
        decrypt_payload(data_key, blob)
    assert err.value.message.startswith(message), err.value.message


def test_info_must_match_sealed_header(data_key: bytes, blob: bytes) -> None:
    cases = {
        "generation": (
            dataclasses.replace(FIELDS, generation=8),
            "encryption.info is from save 8 but local.tgz.ve from save 7: the two files do not "
            "belong together.",
        ),
        "mode": (
            dataclasses.replace(FIELDS, mode=Mode.NONE),
            "encryption.info says mode NONE but local.tgz.ve was saved in mode TPM: "
            "encryption.info was changed.",
        ),
        "requirements": (
            dataclasses.replace(FIELDS, requirements=Requirements()),
            "encryption.info was changed after the configuration was saved: its requirements "
            "(require Secure Boot false, require exec installed only false) differ from those "
            "saved with the configuration (require Secure Boot true, require exec installed "
            "only false).",
        ),
    }
    for expected, message in cases.values():
        with pytest.raises(BundleMismatch) as err:
            decrypt_payload(data_key, blob, expected)
        assert err.value.message == message
        assert isinstance(err.value, BundleCorrupt)


def test_fields_from_info(info: EncryptionInfo) -> None:
    fields = PayloadHeaderFields.from_info(info)
    assert fields == PayloadHeaderFields(info.generation, Mode.TPM, info.requirements)


def test_wrong_key_length_is_a_programming_error(blob: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt_payload(b"k" * 16, blob)


def test_tar_refuses_the_encrypted_archive(tmp_path: Path, data_key: bytes) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hostd.conf").write_text("setting = 1\n")
    archive = pack_dirs({"etc": src})
    plain = tmp_path / "local.tar"
    plain.write_bytes(archive)
    sealed = tmp_path / "local.tgz.ve"
    sealed.write_bytes(encrypt_payload(data_key, archive, FIELDS))
    out = tmp_path / "out"
    out.mkdir()
    ok = subprocess.run(["tar", "xf", str(plain), "-C", str(out)], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    assert (out / "etc" / "hostd.conf").read_text() == "setting = 1\n"
    bad = subprocess.run(["tar", "xzf", str(sealed), "-C", str(out)], capture_output=True)
    assert bad.returncode != 0
    assert b"not in gzip format" in bad.stderr or b"invalid magic" in bad.stderr
