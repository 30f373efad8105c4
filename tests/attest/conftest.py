"""Fixtures of the quote tests: the corpus's real quote vectors, a maker of synthetic quotes
signed with ``cryptography`` keys, and the ``hostseal quote`` CLI."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hostseal.attest.tpm_structures import (
    ALG_ECC,
    ALG_ECDSA,
    ALG_NULL,
    ALG_RSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    HASHES_BY_NAME,
    PcrSelection,
    Signature,
    encode_quote_attest,
)

RESTRICTED_SIGNING = 0x00050072  # fixedTPM fixedParent sensitiveDataOrigin userWithAuth
# restricted sign (what tpm2_createak sets)
P256 = 0x0003


@dataclass
class Vector:
    """One quote with everything needed to verify it."""

    name: str
    ak: bytes  # TPMT_PUBLIC, TPM2B_PUBLIC or PEM
    attest: bytes
    signature: bytes
    nonce: bytes
    pcrs: dict[str, dict[int, bytes]]
    eventlog: bytes | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def with_(self, **changes: object) -> Vector:
        return replace(self, **changes)  # type: ignore[arg-type]


def _pcr_map(bank: str, values: dict[str, str]) -> dict[str, dict[int, bytes]]:
    return {bank: {int(k): bytes.fromhex(v) for k, v in values.items()}}


def load_vectors(corpus: Path) -> dict[str, Vector]:
    vectors: dict[str, Vector] = {}
    for flavour, nonce in (("nonce9009", bytes.fromhex("9009")), ("no-nonce", b"")):
        data = json.loads((corpus / f"go-tpm-tools/derived/gce-cos-85-{flavour}.json").read_text())
        log = (corpus / f"go-tpm-tools/derived/gce-cos-85-{flavour}.eventlog.bin").read_bytes()
        for quote in data["quotes"]:
            bank = quote["pcrs"]["hash"].lower()
            name = f"cos85-{flavour}-{bank}"
            vectors[name] = Vector(
                name,
                bytes.fromhex(data["ak_pub_tpmt_public_hex"]),
                bytes.fromhex(quote["quote_tpms_attest_hex"]),
                bytes.fromhex(quote["raw_sig_tpmt_signature_hex"]),
                nonce,
                _pcr_map(bank, quote["pcrs"]["pcrs"]),
                log,
            )
    win = json.loads((corpus / "go-attestation/derived_windows_gcp_quote_vector.json").read_text())
    vectors["windows-gcp"] = Vector(
        "windows-gcp",
        bytes.fromhex(win["ak_tpmt_public_hex"]),
        bytes.fromhex(win["quote_tpms_attest_hex"]),
        bytes.fromhex(win["quote_tpmt_signature_hex"]),
        b"",
        _pcr_map("sha1", win["pcrs_sha1"]),
        (corpus / "go-attestation/derived_windows_gcp_shielded_vm.eventlog.bin").read_bytes(),
    )
    cmc = corpus / "cmc/derived"
    spec = json.loads((cmc / "quote_vector.json").read_text())
    cert = x509.load_pem_x509_certificate((cmc / "ak_cert.pem").read_bytes())
    vectors["cmc"] = Vector(
        "cmc",
        cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        (cmc / "quote_tpms_attest.bin").read_bytes(),
        (cmc / "quote_sig_tpmt_signature.bin").read_bytes(),
        bytes.fromhex(spec["nonce_hex"]),
        _pcr_map("sha256", spec["pcr_values_sha256"]),
        _cmc_eventlog(spec["event_digests_sha256"]),
        extra={
            "invalid_signature": (cmc / "quote_sig_invalid.bin").read_bytes(),
            "invalid_nonce": bytes.fromhex(spec["invalid_nonce_hex"]),
        },
    )
    keylime = corpus / "keylime/test-data/files"
    emulator = json.loads((corpus / "keylime/derived/emulator_quote_vector.json").read_text())
    checks = emulator["helper_checks"]
    vectors["keylime"] = Vector(
        "keylime",
        (keylime / "ak.pub").read_bytes(),
        (keylime / "quote.out").read_bytes(),
        (keylime / "quotesig.out").read_bytes(),
        bytes.fromhex(checks["extraData_hex"]),
        {"sha256": {n: bytes.fromhex(checks[f"pcr{n}"]) for n in (15, 16, 22)}},
    )
    return vectors


def _cmc_eventlog(digests: dict[str, list[str]]) -> bytes:
    """cmc gives the event digests of PCR 1 and 4, not a log: write them as one (EV_POST_CODE
    events carrying the given digests), which then replays to cmc's quoted PCR 1 and 4."""
    from hostseal.measure import EventLogWriter

    writer = EventLogWriter(banks=("sha256",))
    for pcr, values in sorted(digests.items()):
        for value in values:
            writer.add(int(pcr), 1, b"cmc event", digests={"sha256": bytes.fromhex(value)})
    return writer.to_bytes()


@pytest.fixture(scope="session")
def vectors(corpus: Path) -> dict[str, Vector]:
    return load_vectors(corpus)


# --- synthetic quotes ------------------------------------------------------------------------


def tpmt_public(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    attributes: int = RESTRICTED_SIGNING,
    scheme: int | None = None,
    hash_name: str = "sha256",
) -> bytes:
    """The TPMT_PUBLIC a TPM would report for ``key`` as a restricted signing key."""
    hash_id = HASHES_BY_NAME[hash_name].alg_id
    head = struct.pack(
        ">HHIH", ALG_RSA if isinstance(key, rsa.RSAPrivateKey) else ALG_ECC, 0x000B, attributes, 0
    )
    if isinstance(key, rsa.RSAPrivateKey):
        scheme = ALG_RSASSA if scheme is None else scheme
        scheme_part = (
            struct.pack(">HH", scheme, hash_id)
            if scheme != ALG_NULL
            else struct.pack(">H", ALG_NULL)
        )
        numbers = key.public_key().public_numbers()
        modulus = numbers.n.to_bytes(key.key_size // 8, "big")
        return (
            head
            + struct.pack(">H", ALG_NULL)
            + scheme_part
            + struct.pack(">HI", key.key_size, 0 if numbers.e == 65537 else numbers.e)
            + struct.pack(">H", len(modulus))
            + modulus
        )
    scheme = ALG_ECDSA if scheme is None else scheme
    scheme_part = (
        struct.pack(">HH", scheme, hash_id) if scheme != ALG_NULL else struct.pack(">H", ALG_NULL)
    )
    point = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    curve = {"secp256r1": 0x0003, "secp384r1": 0x0004, "secp521r1": 0x0005}[key.curve.name]
    return (
        head
        + struct.pack(">H", ALG_NULL)
        + scheme_part
        + struct.pack(">HH", curve, ALG_NULL)
        + struct.pack(">H", size)
        + point.x.to_bytes(size, "big")
        + struct.pack(">H", size)
        + point.y.to_bytes(size, "big")
    )


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def sign(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    data: bytes,
    *,
    scheme: int | None = None,
    hash_name: str = "sha256",
    pss_salt: int | None = None,
) -> bytes:
    """A TPMT_SIGNATURE over ``data``, as a TPM makes it (PSS: salt = digest length, as
    libtpms does, unless ``pss_salt`` says otherwise)."""
    h = HASHES_BY_NAME[hash_name]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h.crypto())))
        size = (key.curve.key_size + 7) // 8
        return Signature(
            ALG_ECDSA, h.alg_id, r=r.to_bytes(size, "big"), s=s.to_bytes(size, "big")
        ).to_bytes()
    scheme = ALG_RSASSA if scheme is None else scheme
    if scheme == ALG_RSAPSS:
        salt = h.size if pss_salt is None else pss_salt
        pad: padding.AsymmetricPadding = padding.PSS(padding.MGF1(h.crypto()), salt)
    else:
        pad = padding.PKCS1v15()
    return Signature(scheme, h.alg_id, rsa_sig=key.sign(data, pad, h.crypto())).to_bytes()


@dataclass
class Synthetic:
    """A quote made with a ``cryptography`` key, with its inputs."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    vector: Vector


def make_synthetic(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    selection: tuple[PcrSelection, ...] = (PcrSelection(0x000B, (0, 7)),),
    nonce: bytes = b"\x0b\xad\xc0\xde",
    scheme: int | None = None,
    hash_name: str = "sha256",
    attributes: int = RESTRICTED_SIGNING,
    pss_salt: int | None = None,
    ak_scheme: int | None = None,
) -> Synthetic:
    pcrs: dict[str, dict[int, bytes]] = {}
    h = hashlib.new(hash_name)
    for sel in selection:
        size = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}[sel.bank]
        for pcr in sel.pcrs:
            value = hashlib.new(sel.bank, f"{sel.bank}-{pcr}".encode()).digest()[:size]
            pcrs.setdefault(sel.bank, {})[pcr] = value
            h.update(value)
    attest = encode_quote_attest(extra_data=nonce, selection=selection, pcr_digest=h.digest())
    sig = sign(key, attest, scheme=scheme, hash_name=hash_name, pss_salt=pss_salt)
    public = tpmt_public(
        key,
        attributes=attributes,
        scheme=ak_scheme if ak_scheme is not None else scheme,
        hash_name=hash_name,
    )
    return Synthetic(key, Vector("synthetic", public, attest, sig, nonce, pcrs))


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="session")
def ecc_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Forge:
    """The synthetic-quote helpers, for tests (which cannot import this conftest)."""

    tpmt_public = staticmethod(tpmt_public)
    tpm2b = staticmethod(tpm2b)
    sign = staticmethod(sign)
    quote = staticmethod(make_synthetic)


@pytest.fixture(scope="session")
def forge() -> type[Forge]:
    return Forge


# --- the CLI ---------------------------------------------------------------------------------


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.stdout)
        return data


@pytest.fixture
def run_quote_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """``hostseal quote ARGS`` through the real entry point (errors become messages and exit
    codes there). The lead registers the group in main.py; until then it is added here."""
    from hostseal.cli.main import cli, main
    from hostseal.cli.quote import quote

    if "quote" not in cli.commands:
        cli.add_command(quote)

    def run(*args: str | Path) -> CliRun:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["quote", *map(str, args)])
        out = capsys.readouterr()
        code = exit_info.value.code
        return CliRun(code if isinstance(code, int) else 1, out.out, out.err)

    return run
