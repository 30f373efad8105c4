"""MakeCredential: KDFs against independent implementations, a software ActivateCredential,
the errors, and -- the proof -- a real TPM (swtpm) recovering the secret with tpm2-tools."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from hostseal.attest.credential import aes_cfb_encrypt, kdfa, kdfe, make_credential
from hostseal.attest.errors import AkNameInvalid, EkPublicInvalid
from hostseal.lab import LabHost

SHA256 = 0x000B
EK_ATTRIBUTES = 0x000300B2  # fixedTPM fixedParent sensitiveDataOrigin adminWithPolicy
# restricted decrypt: the TCG EK template (tpm2_createek)
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
AES_128_CFB = struct.pack(">HHH", 0x0006, 128, 0x0043)
AK_NAME = b"\x00\x0b" + hashlib.sha256(b"an AK").digest()


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def ek_template(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    attributes: int = EK_ATTRIBUTES,
    symmetric: bytes = AES_128_CFB,
) -> bytes:
    """The TPM2B_PUBLIC a TPM reports for an EK made from the TCG template, for a software
    key."""
    if isinstance(key, rsa.RSAPrivateKey):
        modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
        body = struct.pack(">HHI", 0x0001, SHA256, attributes) + tpm2b(EK_POLICY) + symmetric
        body += struct.pack(">HHI", 0x0010, 2048, 0) + tpm2b(modulus)
    else:
        point = key.public_key().public_numbers()
        body = struct.pack(">HHI", 0x0023, SHA256, attributes) + tpm2b(EK_POLICY) + symmetric
        body += struct.pack(">HHH", 0x0010, 0x0003, 0x0010)
        body += tpm2b(point.x.to_bytes(32, "big")) + tpm2b(point.y.to_bytes(32, "big"))
    return tpm2b(body)


def software_activate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    ak_name: bytes,
    blob: bytes,
    encrypted_secret: bytes,
) -> bytes:
    """TPM2_ActivateCredential, as the TPM does it, with the EK's private key in software."""
    (size,) = struct.unpack(">H", encrypted_secret[:2])
    protected = encrypted_secret[2 : 2 + size]
    assert len(protected) == size
    if isinstance(key, rsa.RSAPrivateKey):
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\0")
        seed = key.decrypt(protected, oaep)
    else:
        x_size = struct.unpack(">H", protected[:2])[0]
        x = protected[2 : 2 + x_size]
        y = protected[4 + x_size :]
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
        z = key.exchange(ec.ECDH(), ephemeral)
        ek_x = key.public_key().public_numbers().x.to_bytes(32, "big")
        seed = kdfe(SHA256, z, b"IDENTITY", x, ek_x, 256)
    (blob_size,) = struct.unpack(">H", blob[:2])
    id_object = blob[2:]
    assert len(id_object) == blob_size
    (hmac_size,) = struct.unpack(">H", id_object[:2])
    outer_hmac, enc_identity = id_object[2 : 2 + hmac_size], id_object[2 + hmac_size :]
    hmac_key = kdfa(SHA256, seed, b"INTEGRITY", b"", b"", 256)
    expected = hmac.digest(hmac_key, enc_identity + ak_name, "sha256")
    if not hmac.compare_digest(outer_hmac, expected):
        raise ValueError("integrity check failed (TPM_RC_INTEGRITY)")
    sym_key = kdfa(SHA256, seed, b"STORAGE", ak_name, b"", 128)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).decryptor()
    plain = decryptor.update(enc_identity) + decryptor.finalize()
    (secret_size,) = struct.unpack(">H", plain[:2])
    return plain[2 : 2 + secret_size]


@pytest.fixture(scope="module")
def ek_keys() -> dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    return {
        "rsa": rsa.generate_private_key(65537, 2048),
        "ecc": ec.generate_private_key(ec.SECP256R1()),
    }


# --- the KDFs and CFB against independent implementations ------------------------------------


@pytest.mark.parametrize("bits", [128, 256, 384])
def test_kdfa_is_sp800_108_counter_mode(bits: int) -> None:
    key, context = os.urandom(32), AK_NAME
    reference = KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=b"STORAGE",
        context=context,
        fixed=None,
    ).derive(key)
    assert kdfa(SHA256, key, b"STORAGE", context, b"", bits) == reference


def test_kdfe_is_the_sp800_56a_concatenation_kdf() -> None:
    z, party_u, party_v = os.urandom(32), os.urandom(32), os.urandom(32)
    reference = ConcatKDFHash(
        hashes.SHA256(), 48, otherinfo=b"IDENTITY\0" + party_u + party_v
    ).derive(z)
    assert kdfe(SHA256, z, b"IDENTITY", party_u, party_v, 384) == reference


@pytest.mark.parametrize("size", [1, 16, 34, 50])
def test_aes_cfb_matches_cryptography(size: int) -> None:
    key, data = os.urandom(16), os.urandom(size)
    encryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).encryptor()
    assert aes_cfb_encrypt(key, data) == encryptor.update(data) + encryptor.finalize()


# --- MakeCredential / software ActivateCredential --------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
@pytest.mark.parametrize("secret_size", [1, 16, 32])
def test_round_trip_in_software(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], kind: str, secret_size: int
) -> None:
    key = ek_keys[kind]
    secret = os.urandom(secret_size)
    blob, encrypted = make_credential(ek_template(key), AK_NAME, secret)
    assert software_activate(key, AK_NAME, blob, encrypted) == secret
    # A TPMT_PUBLIC (without the TPM2B size) is accepted too.
    blob, encrypted = make_credential(ek_template(key)[2:], AK_NAME, secret)
    assert software_activate(key, AK_NAME, blob, encrypted) == secret


def test_structure_sizes(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
) -> None:
    blob, encrypted = make_credential(ek_template(ek_keys["rsa"]), AK_NAME, bytes(32))
    # TPM2B_ID_OBJECT: size, TPM2B_DIGEST(hmac, 32), encIdentity (2 + 32 bytes).
    assert len(blob) == 2 + 2 + 32 + 34 and blob[:4] == b"\x00\x44\x00\x20"
    assert len(encrypted) == 2 + 256
    _, encrypted = make_credential(ek_template(ek_keys["ecc"]), AK_NAME, bytes(32))
    assert len(encrypted) == 2 + (2 + 32) * 2  # TPMS_ECC_POINT


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_credential_is_bound_to_the_ak_name(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], kind: str
) -> None:
    key = ek_keys[kind]
    blob, encrypted = make_credential(ek_template(key), AK_NAME, b"secret")
    other = b"\x00\x0b" + hashlib.sha256(b"another AK").digest()
    with pytest.raises(ValueError, match="integrity"):
        software_activate(key, other, blob, encrypted)


def test_every_credential_uses_a_fresh_seed(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
) -> None:
    ek = ek_template(ek_keys["ecc"])
    assert make_credential(ek, AK_NAME, b"s") != make_credential(ek, AK_NAME, b"s")


# --- known answers: fixed randomness, fixed output ------------------------------------------

KAT_SEED = bytes(range(32))  # the RSA seed
KAT_SCALAR = hashlib.sha256(b"ephemeral").digest()  # the ECC ephemeral private scalar
KAT_EK = ec.derive_private_key(
    int.from_bytes(hashlib.sha256(b"the EK").digest(), "big"), ec.SECP256R1()
)
# Produced by tpm2-pytss's make_credential with the same randomness (checked live below).
KAT_RSA_BLOB = bytes.fromhex(
    "002a00203ed38e01871d1669ae4677a7627adac3764b4bb10883bb6b59816b1c01908ff835f65e0ad2b8eeed"
)
KAT_ECC_BLOB = bytes.fromhex(
    "002a002036ec7a50bed3a3ee91a64b131ee7a175e4846a35d55c24aa8ade6a69194522059b6b253aa343d534"
)
KAT_ECC_SECRET = bytes.fromhex(
    "004400209a781ca6d055a7f30d0c9ff87936c739f6816ef5f5e72b4b946404b0a1a83b2a"
    "0020c19f842945ea2bf65aa1649b2b02ff79854c8d5ecfcd403862e8a97ea66c71c1"
)


def fixed(data: bytes) -> Callable[[int], bytes]:
    """A random source that always returns (the start of) ``data``."""
    return lambda size: data[:size]


def test_known_answer_rsa(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
) -> None:
    key = ek_keys["rsa"]
    assert isinstance(key, rsa.RSAPrivateKey)
    blob, encrypted = make_credential(
        ek_template(key), AK_NAME, b"secret", random_bytes=fixed(KAT_SEED)
    )
    assert blob == KAT_RSA_BLOB  # the blob depends on the seed, not on the RSA key
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\0")
    assert key.decrypt(encrypted[2:], oaep) == KAT_SEED  # OAEP's own padding stays random
    assert software_activate(key, AK_NAME, blob, encrypted) == b"secret"


def test_known_answer_ecc() -> None:
    blob, encrypted = make_credential(
        ek_template(KAT_EK), AK_NAME, b"secret", random_bytes=fixed(KAT_SCALAR)
    )
    assert (blob, encrypted) == (KAT_ECC_BLOB, KAT_ECC_SECRET)
    assert software_activate(KAT_EK, AK_NAME, blob, encrypted) == b"secret"


def test_ecc_redraws_a_scalar_out_of_range() -> None:
    draws = iter([bytes(32), b"\xff" * 32, KAT_SCALAR])  # zero, above the order, then valid
    blob, encrypted = make_credential(
        ek_template(KAT_EK), AK_NAME, b"secret", random_bytes=lambda size: next(draws)
    )
    assert (blob, encrypted) == (KAT_ECC_BLOB, KAT_ECC_SECRET)


def test_a_short_random_source_is_refused() -> None:
    with pytest.raises(ValueError, match="returned 3 bytes, 32 were asked for"):
        make_credential(ek_template(KAT_EK), AK_NAME, b"secret", random_bytes=fixed(b"abc"))


def test_known_answers_agree_with_tpm2_pytss(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An independent MakeCredential (tpm2-pytss), given the same randomness, gives the vectors
    above."""
    tss_crypto = pytest.importorskip("tpm2_pytss.internal.crypto")
    from tpm2_pytss.types import TPM2B_NAME, TPM2B_PUBLIC
    from tpm2_pytss.utils import make_credential as tss_make_credential

    def theirs(ek_public: bytes) -> tuple[bytes, bytes]:
        public, _ = TPM2B_PUBLIC.unmarshal(ek_public)
        blob, secret = tss_make_credential(public, b"secret", TPM2B_NAME(AK_NAME))
        return blob.marshal(), secret.marshal()

    monkeypatch.setattr(tss_crypto.secrets, "token_bytes", fixed(KAT_SEED))
    assert theirs(ek_template(ek_keys["rsa"]))[0] == KAT_RSA_BLOB
    scalar = int.from_bytes(KAT_SCALAR, "big")
    monkeypatch.setattr(
        tss_crypto.ec,
        "generate_private_key",
        lambda curve, backend=None: ec.derive_private_key(scalar, curve),
    )
    assert theirs(ek_template(KAT_EK)) == (KAT_ECC_BLOB, KAT_ECC_SECRET)


# --- errors ----------------------------------------------------------------------------------


@dataclass
class Bad:
    ek: str  # "rsa", or a transformation name
    expect: type[Exception]
    message: str


def _bad_ek(kind: str, key: rsa.RSAPrivateKey) -> bytes:
    if kind == "signing key":
        return ek_template(key, attributes=0x00050072)
    if kind == "no symmetric":
        return ek_template(key, symmetric=struct.pack(">H", 0x0010))
    if kind == "AES in CTR mode":
        return ek_template(key, symmetric=struct.pack(">HHH", 0x0006, 128, 0x0040))
    if kind == "truncated":
        return ek_template(key)[:100]
    if kind == "trailing bytes":
        return ek_template(key)[2:] + b"\0\0"
    raise AssertionError(kind)


BAD_EKS = {
    "signing key": "is not a restricted decryption (storage) key (objectAttributes 0x00050072)",
    "no symmetric": "The EK's symmetric algorithm (0x0010, 0 bits) is not AES",
    "AES in CTR mode": "The EK's symmetric mode 0x0040 is not CFB",
    "truncated": "The EK public area is malformed: ",
    "trailing bytes": "The EK public area is malformed: ",
}


@pytest.mark.parametrize("kind", list(BAD_EKS))
def test_unusable_ek_is_refused(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], kind: str
) -> None:
    key = ek_keys["rsa"]
    assert isinstance(key, rsa.RSAPrivateKey)
    with pytest.raises(EkPublicInvalid) as info:
        make_credential(_bad_ek(kind, key), AK_NAME, b"secret")
    assert BAD_EKS[kind] in info.value.message
    assert "tpm2_createek -u ek.pub" in info.value.remedy


@pytest.mark.parametrize(
    "name", [b"", b"\x00\x0b" + bytes(20), b"\x00\x99" + bytes(32), AK_NAME + b"\0"]
)
def test_malformed_ak_name_is_refused(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], name: bytes
) -> None:
    with pytest.raises(AkNameInvalid) as info:
        make_credential(ek_template(ek_keys["rsa"]), name, b"secret")
    assert info.value.message.startswith(f"The AK name ({len(name)} bytes: ")
    assert "is not a TPM name" in info.value.message
    assert "tpm2_createak -n" in info.value.remedy


@pytest.mark.parametrize("size", [0, 33])
def test_secret_size_is_checked(
    ek_keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey], size: int
) -> None:
    with pytest.raises(ValueError, match=f"must be 1 to 32 bytes .* got {size}"):
        make_credential(ek_template(ek_keys["rsa"]), AK_NAME, bytes(size))


# --- a real TPM: swtpm with tpm2-tools -------------------------------------------------------

needs_tpm2_tools = pytest.mark.skipif(
    shutil.which("tpm2_activatecredential") is None, reason="tpm2-tools is not installed"
)
CRED_FILE_MAGIC = 0xBADCC0DE  # tpm2-tools' files_write_header(): magic, then version 1


class Tools:
    """tpm2-tools against a lab host's swtpm, in a scratch directory. swtpm has no resource
    manager, so transient objects are flushed after each tool, as tpm2-abrmd would."""

    def __init__(self, host: LabHost, workdir: Path) -> None:
        self.env = {**os.environ, "TPM2TOOLS_TCTI": host.tcti}
        self.dir = workdir

    def run(self, *args: str, flush: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            args, cwd=self.dir, env=self.env, capture_output=True, text=True, check=False
        )
        if flush:
            subprocess.run(
                ["tpm2_flushcontext", "-t"], cwd=self.dir, env=self.env, capture_output=True
            )
        return result

    def check(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"{args[0]} failed: {result.stderr}"
        return result.stdout

    def make_keys(self, alg: str) -> tuple[bytes, bytes]:
        """(EK TPM2B_PUBLIC, AK name) of a fresh EK of ``alg`` and an AK under it."""
        self.check("tpm2_createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub")
        self.check("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-u", "ak.pub", "-n", "ak.name")
        return (self.dir / "ek.pub").read_bytes(), (self.dir / "ak.name").read_bytes()

    def activate(self, cred_file: str) -> subprocess.CompletedProcess[str]:
        """tpm2_activatecredential with the endorsement policy session tpm2-tools documents."""
        (self.dir / "act.out").unlink(missing_ok=True)
        self.check("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
        self.check("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
        result = self.run(
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            cred_file,
            "-o",
            "act.out",
            "-P",
            "session:session.ctx",
        )
        self.run("tpm2_flushcontext", "session.ctx")
        return result


def tpm2_tools_cred_file(blob: bytes, encrypted_secret: bytes) -> bytes:
    """tpm2_makecredential's output file: magic and version (big-endian), then the marshalled
    TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET."""
    return struct.pack(">II", CRED_FILE_MAGIC, 1) + blob + encrypted_secret


@pytest.mark.swtpm
@needs_tpm2_tools
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_tpm_activates_our_credential(lab_host: LabHost, tmp_path: Path, alg: str) -> None:
    tools = Tools(lab_host, tmp_path)
    ek_public, ak_name = tools.make_keys(alg)
    secret = os.urandom(32)

    blob, encrypted = make_credential(ek_public, ak_name, secret)
    (tmp_path / "cred.out").write_bytes(tpm2_tools_cred_file(blob, encrypted))
    result = tools.activate("cred.out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "act.out").read_bytes() == secret

    # The same credential for another AK name: the TPM refuses it (outer HMAC).
    other = ak_name[:2] + hashlib.sha256(b"not this AK").digest()
    blob, encrypted = make_credential(ek_public, other, secret)
    (tmp_path / "wrong.out").write_bytes(tpm2_tools_cred_file(blob, encrypted))
    refused = tools.activate("wrong.out")
    assert refused.returncode != 0
    assert "0x" in refused.stderr  # a TPM error code (TPM_RC_INTEGRITY)


@pytest.mark.swtpm
@needs_tpm2_tools
@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_offline_tpm2_makecredential_agrees(lab_host: LabHost, tmp_path: Path, alg: str) -> None:
    """tpm2_makecredential -T none (its own software MakeCredential) and ours produce files of
    the same layout, and the TPM accepts both."""
    tools = Tools(lab_host, tmp_path)
    ek_public, ak_name = tools.make_keys(alg)
    secret = os.urandom(32)
    (tmp_path / "secret.bin").write_bytes(secret)
    tools.check(
        "tpm2_makecredential",
        "-T",
        "none",
        "-e",
        "ek.pub",
        "-s",
        "secret.bin",
        "-n",
        ak_name.hex(),
        "-o",
        "theirs.out",
    )
    theirs = (tmp_path / "theirs.out").read_bytes()
    ours = tpm2_tools_cred_file(*make_credential(ek_public, ak_name, secret))
    (tmp_path / "ours.out").write_bytes(ours)

    assert theirs[:8] == ours[:8] == bytes.fromhex("badcc0de00000001")
    assert len(theirs) == len(ours)
    blob_size = struct.unpack(">H", ours[8:10])[0]
    assert struct.unpack(">H", theirs[8:10])[0] == blob_size
    assert theirs[10:12] == ours[10:12]  # the inner TPM2B_DIGEST (outer HMAC) size

    for name in ("theirs.out", "ours.out"):
        result = tools.activate(name)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert (tmp_path / "act.out").read_bytes() == secret
