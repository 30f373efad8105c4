"""EK certificates against TPM vendor CAs: the corpus's real EK certificates (with their DER
quirks), the negative cases, and synthetic chains for the rules no corpus file breaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from hostseal.attest.ekcert import (
    DEFAULT_TPM_CA_DIR,
    EkCertificate,
    StoreSource,
    TrustStore,
    read_ek_certificate,
    verify_ek_certificate,
)
from hostseal.attest.errors import (
    EkCertificateMalformed,
    EkCertificateMismatch,
    EkCertificateUntrusted,
    EkPublicInvalid,
    TrustStoreInvalid,
)
from hostseal.truststore import load_trust_store, read_trust_store

AT = datetime(2025, 6, 1, tzinfo=UTC)
KEYLIME_STORE = "keylime/tpm_cert_store"
STM_RSA_EK = "keylime/derived/st_sha256_with_rsa_der.der"
STM_ECC_EK = "keylime/derived/st_ecdsa_sha256_der.der"
NUVOTON_EK = "keylime/derived/nuvoton_NPCT75x_ek_leaf_malformed_from_test_certificate_modeltype.der"
INTEL_EK = "smallstep-crypto/derived/intel_ptt_rsa_ek_cert_from_ekop.der"
INTEL_EK_PUBLIC = "tpm2-tools/derived/intel_ptt_test_rsa_ek_tpm2b_public.bin"
INTEL_ECC_EK_PUBLIC = "tpm2-tools/derived/intel_ptt_test_ecc_ek_tpm2b_public.bin"
TPM_CA_ROOTS = "tpm-ca-certificates/MIRROR.tpm-ca-certificates.pem"
TPM_CA_INTERMEDIATES = "tpm-ca-certificates/MIRROR.tpm-intermediate-ca-certificates.pem"
GCE_CERTS = "go-tpm-tools/internal/test/certificates"
GCE_CAS = "go-tpm-tools/server/ca-certs"


@dataclass
class Chain:
    """A corpus EK certificate, the store to verify it with, and what must come out."""

    cert: str
    anchors: list[str]
    intermediates: list[str] = field(default_factory=list)
    vendor: str | None = None
    vendor_name: str | None = None
    model: str | None = None
    chain_ends: str = ""  # the trust anchor's subject ends with this
    chain_length: int = 1
    quirks: tuple[str, ...] = ()


PADDING = "431 bytes of padding after the certificate were trimmed"
CHAINS = {
    "STM RSA EK (0xFF padded) to its intermediate": Chain(
        STM_RSA_EK,
        [f"{KEYLIME_STORE}/STM_RSA_05I.pem"],
        vendor="STM",
        vendor_name="STMicroelectronics",
        model="ST33HTPHAHB4",
        chain_ends="CN=STM TPM EK Intermediate CA 05",
        quirks=(PADDING,),
    ),
    "STM RSA EK up to the GlobalSign TPM root": Chain(
        STM_RSA_EK,
        [f"{KEYLIME_STORE}/GS_TPM_RT.pem"],
        [f"{KEYLIME_STORE}/STM_RSA_05I.pem", f"{KEYLIME_STORE}/STM_RSA_RT.pem"],
        vendor="STM",
        chain_ends="CN=GlobalSign Trusted Platform Module Root CA",
        chain_length=3,
        quirks=(PADDING,),
    ),
    "STM ECC EK to its intermediate": Chain(
        STM_ECC_EK,
        [f"{KEYLIME_STORE}/STM_ECC_01I.pem"],
        vendor="STM",
        model="ST33HTPHAHB4",
        chain_ends="CN=STM TPM ECC Intermediate CA 01",
    ),
    "STM ECC EK with the tpm-ca-certificates bundle": Chain(
        STM_ECC_EK,
        [TPM_CA_ROOTS],
        [TPM_CA_INTERMEDIATES],
        vendor="STM",
        chain_ends="CN=STM TPM ECC Root CA 01",
        chain_length=2,
    ),
    "Nuvoton EK (unsorted SET) with the tpm-ca-certificates bundle": Chain(
        NUVOTON_EK,
        [TPM_CA_ROOTS],
        [TPM_CA_INTERMEDIATES],
        vendor="NTC",
        vendor_name="Nuvoton",
        model="NPCT75x",
        chain_ends="CN=Nuvoton TPM Root CA 2111+O=Nuvoton Technology Corporation+C=TW",
        quirks=("the issuer name has a multi-valued RDN in non-DER (unsorted) order",),
    ),
    "Intel PTT EK (explicit critical=FALSE) to keylime's Intel root": Chain(
        INTEL_EK,
        [f"{KEYLIME_STORE}/INTEL_RT.pem"],
        [f"{KEYLIME_STORE}/INTEL_I.pem"],
        vendor="INTC",
        vendor_name="Intel",
        model="SPT",
        chain_ends="OU=TPM EK root cert signing, CN=www.intel.com",
        chain_length=2,
        quirks=("extension 2.5.29.9 encodes the default critical=FALSE",),
    ),
    "Intel PTT EK with keylime's whole store": Chain(
        INTEL_EK,
        [KEYLIME_STORE],
        vendor="INTC",
        chain_ends="OU=TPM EK intermediate for SPTH_EPID_PROD, CN=www.intel.com",
        quirks=("extension 2.5.29.9 encodes the default critical=FALSE",),
    ),
    "STM RSA EK with keylime's whole store": Chain(
        STM_RSA_EK, [KEYLIME_STORE], vendor="STM", quirks=(PADDING,)
    ),
    **{
        f"GCE vTPM {name}": Chain(
            f"{GCE_CERTS}/{name}_cert.pem",
            [f"{GCE_CAS}/tpm_ek_root_1.cer", f"{GCE_CAS}/gcp_ek_ak_ca_root.crt"],
            [
                f"{GCE_CAS}/tpm_ek_intermediate_2.crt",
                f"{GCE_CAS}/tpm_ek_intermediate_3.crt",
                f"{GCE_CAS}/gcp_ek_ak_ca_intermediate_v3.crt",
            ],
            vendor="GOOG" if name.startswith("uca") else None,
            vendor_name="Google" if name.startswith("uca") else None,
            model="vTPM" if name.startswith("uca") else None,
            chain_ends="CN=EK/AK CA Root" if name.startswith("pca") else "0:18",
            chain_length=2,
        )
        for name in (
            f"{ca}_tpm_{alg}_{use}"
            for ca in ("uca", "pca")
            for alg in ("rsa", "ecc")
            for use in ("enc", "sign")
        )
    },
}


def store_of(corpus: Path, case: Chain) -> TrustStore:
    return read_trust_store(
        *(corpus / p for p in case.anchors),
        intermediates=[corpus / p for p in case.intermediates],
    )


@pytest.mark.corpus
@pytest.mark.parametrize("name", list(CHAINS))
def test_real_ek_certificates_verify(corpus: Path, name: str) -> None:
    case = CHAINS[name]
    store = store_of(corpus, case)
    assert store.problems == ()
    ek = verify_ek_certificate((corpus / case.cert).read_bytes(), store, at=AT)
    assert isinstance(ek, EkCertificate)
    assert ek.vendor == case.vendor
    if case.vendor_name is not None:
        assert ek.vendor_name == case.vendor_name
    if case.model is not None:
        assert ek.model == case.model
    assert ek.chain[-1].endswith(case.chain_ends)
    assert len(ek.chain) == case.chain_length
    assert ek.quirks == case.quirks
    assert ek.to_dict()["fingerprint_sha256"] == ek.fingerprint


@pytest.mark.corpus
def test_cryptography_refuses_the_quirky_certificates_we_verify(corpus: Path) -> None:
    """Why hostseal reads certificates itself: the x509 module refuses these real EKs."""
    for name, error in ((NUVOTON_EK, "InvalidSetOrdering"), (INTEL_EK, "EncodedDefault")):
        with pytest.raises(ValueError, match=error):
            x509.load_der_x509_certificate((corpus / name).read_bytes())


@pytest.mark.corpus
def test_intel_ptt_ek_matches_its_tpm_public_area(corpus: Path) -> None:
    store = read_trust_store(
        corpus / KEYLIME_STORE / "INTEL_RT.pem",
        intermediates=[corpus / KEYLIME_STORE / "INTEL_I.pem"],
    )
    ek = verify_ek_certificate(
        (corpus / INTEL_EK).read_bytes(),
        store,
        ek_public=(corpus / INTEL_EK_PUBLIC).read_bytes(),
        at=AT,
    )
    assert ek.manufacturer_id == "id:494E5443"
    assert ek.firmware_version == "id:00020000"
    assert isinstance(ek.public_key, rsa.RSAPublicKey)
    assert ek.subject == "(empty)"
    assert ek.issuer.endswith("OU=TPM EK intermediate for SPTH_EPID_PROD, CN=www.intel.com")

    with pytest.raises(EkCertificateMismatch) as info:
        verify_ek_certificate(
            (corpus / INTEL_EK).read_bytes(),
            store,
            ek_public=(corpus / INTEL_ECC_EK_PUBLIC).read_bytes(),
            at=AT,
        )
    assert info.value.message.startswith(
        "The EK certificate certifies another key than the host's EK (certificate: RSA 2048 "
        "modulus c320e2f244a8601a...; EK: ECC secp256r1"
    )
    assert "send the EK of the certificate's algorithm" in info.value.remedy


@pytest.mark.corpus
def test_whole_bundles_load(corpus: Path) -> None:
    bundle = read_trust_store(corpus / TPM_CA_ROOTS, intermediates=[corpus / TPM_CA_INTERMEDIATES])
    assert (len(bundle.anchors), len(bundle.intermediates), bundle.problems) == (26, 143, ())
    keylime = read_trust_store(corpus / KEYLIME_STORE)
    assert (len(keylime), keylime.problems) == (51, ())


# --- negative cases on the corpus ------------------------------------------------------------


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


@pytest.mark.corpus
def test_wrong_vendor_store(corpus: Path) -> None:
    store = read_trust_store(corpus / KEYLIME_STORE / "INTEL_RT.pem")
    with pytest.raises(EkCertificateUntrusted) as info:
        verify_ek_certificate((corpus / STM_RSA_EK).read_bytes(), store, at=AT)
    assert info.value.reason == "no_issuer"
    assert info.value.message == (
        "The EK certificate was issued by 'C=CH, O=STMicroelectronics NV, CN=STM TPM EK "
        "Intermediate CA 05', which is not in the TPM CA trust store (1 certificate)."
    )
    assert info.value.remedy.startswith("Do not enrol this host until its TPM is explained")
    assert "INTEL_RT.pem" in info.value.remedy
    assert info.value.to_dict()["reason"] == "no_issuer"


@pytest.mark.corpus
def test_intel_ptt_ek_is_not_covered_by_the_tpm_ca_bundle(corpus: Path) -> None:
    store = read_trust_store(corpus / TPM_CA_ROOTS, intermediates=[corpus / TPM_CA_INTERMEDIATES])
    with pytest.raises(EkCertificateUntrusted) as info:
        verify_ek_certificate((corpus / INTEL_EK).read_bytes(), store, at=AT)
    assert info.value.reason == "no_issuer"
    assert "SPTH_EPID_PROD" in info.value.message


@pytest.mark.corpus
@pytest.mark.parametrize(
    "what, offset",
    [("tbsCertificate (serial number)", 16), ("signature value", -5)],
)
def test_tampered_certificate(corpus: Path, what: str, offset: int) -> None:
    raw = (corpus / STM_ECC_EK).read_bytes()
    store = read_trust_store(corpus / KEYLIME_STORE / "STM_ECC_01I.pem")
    with pytest.raises(EkCertificateUntrusted) as info:
        verify_ek_certificate(_flip(raw, offset % len(raw)), store, at=AT)
    assert info.value.reason == "bad_signature", what
    assert info.value.message == (
        "The EK certificate's signature does not verify with the key of its issuer "
        "'C=CH, O=STMicroelectronics NV, CN=STM TPM ECC Intermediate CA 01' in the trust "
        "store: the certificate was altered or forged."
    )


@pytest.mark.corpus
def test_tampered_nuvoton_certificate(corpus: Path) -> None:
    """The lenient reading of non-DER certificates still checks their signatures."""
    raw = (corpus / NUVOTON_EK).read_bytes()
    store = read_trust_store(corpus / KEYLIME_STORE / "NUVO_2111.pem")
    assert verify_ek_certificate(raw, store, at=AT).vendor == "NTC"
    with pytest.raises(EkCertificateUntrusted, match="does not verify") as info:
        verify_ek_certificate(_flip(raw, 200), store, at=AT)  # inside the RSA modulus
    assert info.value.reason == "bad_signature"


@pytest.mark.corpus
@pytest.mark.parametrize(
    "at, reason, message",
    [
        (
            datetime(2029, 1, 1, tzinfo=UTC),
            "expired",
            "The EK certificate expired on 2028-07-11 00:00 UTC (checked at 2029-01-01 00:00 UTC).",
        ),
        (
            datetime(2017, 1, 1, tzinfo=UTC),
            "not_yet_valid",
            "The EK certificate is not valid before 2018-07-11 00:00 UTC (checked at "
            "2017-01-01 00:00 UTC).",
        ),
    ],
)
def test_validity_at_a_given_time(corpus: Path, at: datetime, reason: str, message: str) -> None:
    store = read_trust_store(corpus / KEYLIME_STORE / "STM_RSA_05I.pem")
    with pytest.raises(EkCertificateUntrusted) as info:
        verify_ek_certificate((corpus / STM_RSA_EK).read_bytes(), store, at=at)
    assert (info.value.reason, info.value.message) == (reason, message)


@pytest.mark.corpus
def test_key_mismatch(corpus: Path) -> None:
    store = read_trust_store(corpus / KEYLIME_STORE / "STM_RSA_05I.pem")
    with pytest.raises(EkCertificateMismatch, match="certifies another key"):
        verify_ek_certificate(
            (corpus / STM_RSA_EK).read_bytes(),
            store,
            ek_public=(corpus / INTEL_EK_PUBLIC).read_bytes(),
            at=AT,
        )


@pytest.mark.corpus
@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda raw: raw[:300], "The EK certificate cannot be read: element at offset 0 claims"),
        (
            lambda raw: raw + b"junk",
            "The EK certificate cannot be read: 4 bytes of unexpected data",
        ),
        (lambda raw: b"hello", "The EK certificate cannot be read: "),
        (lambda raw: raw + raw, "The EK certificate cannot be read: 775 bytes of unexpected"),
    ],
)
def test_malformed_certificate(corpus: Path, mangle: object, message: str) -> None:
    raw = (corpus / STM_ECC_EK).read_bytes()
    store = read_trust_store(corpus / KEYLIME_STORE / "STM_ECC_01I.pem")
    with pytest.raises(EkCertificateMalformed) as info:
        verify_ek_certificate(mangle(raw), store, at=AT)  # type: ignore[operator]
    assert info.value.message.startswith(message)
    assert "tpm2_getekcertificate" in info.value.remedy


@pytest.mark.corpus
def test_malformed_ek_public(corpus: Path) -> None:
    store = read_trust_store(corpus / KEYLIME_STORE / "STM_ECC_01I.pem")
    with pytest.raises(EkPublicInvalid, match="The EK public area is malformed"):
        verify_ek_certificate(
            (corpus / STM_ECC_EK).read_bytes(), store, ek_public=b"\x00\x01\x00", at=AT
        )


# --- the default store -----------------------------------------------------------------------


def test_default_store_is_empty_and_says_where_to_get_vendor_cas(tmp_path: Path) -> None:
    assert Path("/etc/hostseal/tpm-ca") == DEFAULT_TPM_CA_DIR
    store = load_trust_store(tmp_path / "tpm-ca")
    assert store.empty and len(store) == 0
    with pytest.raises(EkCertificateUntrusted) as info:
        verify_ek_certificate(_synthetic_chain().leaf, store, at=AT)
    assert info.value.reason == "empty_store"
    assert info.value.message == (
        f"No TPM vendor CA certificates are configured (the trust store {tmp_path / 'tpm-ca'} "
        "has no trust anchors), so no EK certificate can be verified."
    )
    assert "https://github.com/loicsikidi/tpm-ca-certificates" in info.value.remedy
    assert "'intermediates' sub-directory" in info.value.remedy


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreInvalid, match="does not exist"):
        read_trust_store(tmp_path / "nowhere")


def test_directory_layout_and_unreadable_files(tmp_path: Path) -> None:
    chain = _synthetic_chain()
    (tmp_path / "intermediates").mkdir()
    (tmp_path / "root.pem").write_bytes(_pem(chain.root))
    (tmp_path / "intermediates" / "ica.der").write_bytes(chain.intermediate)
    (tmp_path / "broken.crt").write_bytes(b"not a certificate")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
    (tmp_path / "README.txt").write_text("ignored: not a certificate file name")
    store = read_trust_store(tmp_path)
    assert (len(store.anchors), len(store.intermediates)) == (1, 1)
    assert len(store.problems) == 2
    assert "broken.crt: not a readable certificate" in store.problems[0]
    assert store.problems[1] == (
        f"{tmp_path / 'key.pem'}: no certificate found (no CERTIFICATE block in the PEM text)"
    )
    ek = verify_ek_certificate(chain.leaf, store, at=AT)
    assert ek.chain == ("CN=Synthetic TPM ICA", "CN=Synthetic TPM Root")


def test_store_from_named_sources_keeps_the_callers_problems() -> None:
    chain = _synthetic_chain()
    store = TrustStore.from_sources(
        [
            StoreSource("root.pem", _pem(chain.root)),
            StoreSource("ica.der", chain.intermediate, anchor=False),
            StoreSource("junk.pem", b"-----BEGIN PRIVATE KEY-----\n"),
        ],
        problems=["gone.pem: Permission denied"],
        location="three files",
    )
    assert (len(store.anchors), len(store.intermediates), store.location) == (1, 1, "three files")
    assert store.problems == (
        "gone.pem: Permission denied",
        "junk.pem: no certificate found (no CERTIFICATE block in the PEM text)",
    )
    ek = verify_ek_certificate(chain.leaf, store, at=AT)
    assert ek.chain == ("CN=Synthetic TPM ICA", "CN=Synthetic TPM Root")


# --- synthetic chains: the rules no corpus certificate breaks ---------------------------------


@dataclass
class Synthetic:
    root: bytes
    intermediate: bytes
    leaf: bytes
    leaf_key: rsa.RSAPrivateKey


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _cert(
    subject: str,
    issuer: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    ca: bool | None,
    not_after: datetime = datetime(2040, 1, 1, tzinfo=UTC),
    extra: x509.ExtensionType | None = None,
    pss: bool = False,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    if pss:
        assert isinstance(signer, rsa.RSAPrivateKey)
        pad = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        cert = builder.sign(signer, hashes.SHA256(), rsa_padding=pad)
    else:
        cert = builder.sign(signer, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def _key(name: str) -> rsa.RSAPrivateKey:
    if name not in _KEYS:
        _KEYS[name] = rsa.generate_private_key(65537, 2048)
    return _KEYS[name]


def _synthetic_chain(
    *,
    ica_is_ca: bool | None = True,
    ica_not_after: datetime = datetime(2040, 1, 1, tzinfo=UTC),
    leaf_extra: x509.ExtensionType | None = None,
    pss: bool = False,
) -> Synthetic:
    root, ica, leaf = _key("root"), _key("ica"), _key("leaf")
    root_der = _cert("Synthetic TPM Root", "Synthetic TPM Root", root, root, ca=True)
    ica_der = _cert(
        "Synthetic TPM ICA", "Synthetic TPM Root", ica, root, ca=ica_is_ca, not_after=ica_not_after
    )
    leaf_der = _cert(
        "Synthetic EK", "Synthetic TPM ICA", leaf, ica, ca=False, extra=leaf_extra, pss=pss
    )
    return Synthetic(root_der, ica_der, leaf_der, leaf)


@dataclass
class Rule:
    chain: dict[str, object]
    reason: str | None  # None: the certificate verifies
    message: str = ""


RULES = {
    "a good chain": Rule({}, None),
    "RSA-PSS signatures": Rule({"pss": True}, None),
    "issuer is not a CA": Rule(
        {"ica_is_ca": False},
        "not_a_ca",
        "The CA certificate 'CN=Synthetic TPM ICA' is not a CA allowed to sign certificates "
        "(basicConstraints / keyUsage), yet it is the issuer found.",
    ),
    "issuer without basicConstraints": Rule({"ica_is_ca": None}, "not_a_ca"),
    "expired intermediate": Rule(
        {"ica_not_after": AT - timedelta(days=1)},
        "expired",
        "The CA certificate 'CN=Synthetic TPM ICA' expired on 2025-05-31 00:00 UTC "
        "(checked at 2025-06-01 00:00 UTC).",
    ),
    "unknown critical extension": Rule(
        {"leaf_extra": x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00")},
        "unsupported_critical_extension",
        "The EK certificate has a critical extension hostseal does not process (1.2.3.4), so "
        "it cannot be accepted.",
    ),
}


@pytest.mark.parametrize("name", list(RULES))
def test_chain_rules(name: str) -> None:
    rule = RULES[name]
    chain = _synthetic_chain(**rule.chain)  # type: ignore[arg-type]
    store = TrustStore.from_bytes([chain.root], [chain.intermediate])
    if rule.reason is None:
        ek = verify_ek_certificate(chain.leaf, store, at=AT)
        assert ek.chain == ("CN=Synthetic TPM ICA", "CN=Synthetic TPM Root")
        assert ek.vendor is None and ek.subject == "CN=Synthetic EK"
        return
    with pytest.raises(EkCertificateUntrusted) as info:
        verify_ek_certificate(chain.leaf, store, at=AT)
    assert info.value.reason == rule.reason
    if rule.message:
        assert info.value.message == rule.message


def test_pem_input_and_anchor_on_an_intermediate() -> None:
    chain = _synthetic_chain()
    store = TrustStore.from_bytes([_pem(chain.intermediate)])
    ek = verify_ek_certificate(_pem(chain.leaf), store, at=AT)
    assert ek.chain == ("CN=Synthetic TPM ICA",)


def test_naive_time_is_refused() -> None:
    chain = _synthetic_chain()
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_ek_certificate(
            chain.leaf, TrustStore.from_bytes([chain.root]), at=datetime(2025, 1, 1)
        )


@pytest.mark.corpus
@pytest.mark.parametrize("name", list(CHAINS))
def test_real_ek_certificates_read_without_a_store(corpus: Path, name: str) -> None:
    """What the dashboard shows: the same reader and facts, with nothing vouching for them."""
    case = CHAINS[name]
    ek = read_ek_certificate((corpus / case.cert).read_bytes())
    assert (ek.vendor, ek.quirks, ek.chain) == (case.vendor, case.quirks, ())
    if case.vendor_name is not None:
        assert ek.vendor_name == case.vendor_name
    if case.model is not None:
        assert ek.model == case.model
