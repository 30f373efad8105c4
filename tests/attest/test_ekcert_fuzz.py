"""Fuzzing the EK-certificate reader: random bytes and mutated real certificates give a result
or one of the EK-certificate errors, never another exception; CA files always load (what cannot
be read is listed in ``problems``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostseal.attest.ekcert import TrustStore, verify_ek_certificate
from hostseal.attest.errors import (
    EkCertificateMalformed,
    EkCertificateMismatch,
    EkCertificateUntrusted,
)
from hostseal.truststore import read_trust_store

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("HOSTSEAL_CORPUS") or REPO.parent / "shared" / "realdata")
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
AT = datetime(2025, 6, 1, tzinfo=UTC)
CERTS = {
    "stm-rsa": "keylime/derived/st_sha256_with_rsa_der.der",
    "stm-ecc": "keylime/derived/st_ecdsa_sha256_der.der",
    "nuvoton": "keylime/derived/nuvoton_NPCT75x_ek_leaf_malformed_from_test_"
    "certificate_modeltype.der",
    "intel": "smallstep-crypto/derived/intel_ptt_rsa_ek_cert_from_ekop.der",
    "gce": "go-tpm-tools/internal/test/certificates/uca_tpm_rsa_enc_cert.pem",
}
RAW = {
    name: (CORPUS / path).read_bytes() for name, path in CERTS.items() if (CORPUS / path).is_file()
}
EXPECTED = (EkCertificateMalformed, EkCertificateUntrusted, EkCertificateMismatch)


def _store() -> TrustStore:
    if not (CORPUS / "keylime/tpm_cert_store").is_dir():
        return TrustStore()
    return read_trust_store(
        CORPUS / "keylime/tpm_cert_store",
        intermediates=[CORPUS / "go-tpm-tools/server/ca-certs"],
    )


STORE = _store()


def exercise(raw: bytes) -> None:
    try:
        verify_ek_certificate(raw, STORE, at=AT)
    except EXPECTED as err:
        assert err.message and err.remedy


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    exercise(raw)
    exercise(b"\x30\x82" + raw)


@pytest.mark.corpus
@FUZZ
@given(
    st.sampled_from(sorted(RAW) or ["none"]),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 4000),
)
def test_mutated_real_certificates(
    corpus: Path, name: str, edits: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(RAW[name])
    for position, value in edits:
        raw[position % len(raw)] = value
    exercise(bytes(raw))
    exercise(bytes(raw[: cut % len(raw)]))


@pytest.mark.corpus
@FUZZ
@given(
    st.sampled_from(sorted(RAW) or ["none"]),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_mutated_ca_certificates_load(
    corpus: Path, name: str, edits: list[tuple[int, int]]
) -> None:
    raw = bytearray(RAW[name])
    for position, value in edits:
        raw[position % len(raw)] = value
    store = TrustStore.from_bytes([bytes(raw)], [bytes(raw)])
    assert len(store) + len(store.problems) >= 1
