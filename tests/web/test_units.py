"""The dashboard's pieces without a browser: session cookies, the fleet chart, filters, the TPM
vendor and kind read from every EK certificate of the corpus."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hostseal.server.http.web import chart, hostrows
from hostseal.server.http.web.session import LIFETIME, Sessions, WebSession, local_path
from hostseal.server.serverkey import ServerKey

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_session_cookie_is_sealed_and_refused_when_changed_expired_or_ended() -> None:
    sessions = Sessions(ServerKey(os.urandom(32)))
    session = WebSession.new("ab" * 32, NOW)
    cookie = sessions.seal(session)
    assert "ab" * 32 not in cookie and session.csrf not in cookie  # opaque
    assert sessions.open(cookie, NOW) == session
    key_id, wrapped, sealed = cookie.split(".")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert sessions.open(f"{key_id}.{wrapped}.{flipped}", NOW) is None
    assert sessions.open("garbage", NOW) is None
    assert Sessions(ServerKey(os.urandom(32))).open(cookie, NOW) is None  # another server key
    assert sessions.open(cookie, NOW + LIFETIME) is None
    sessions.end(session, NOW)
    assert sessions.open(cookie, NOW) is None


def test_only_dashboard_paths_are_redirect_targets() -> None:
    assert local_path("/ui/hosts/esx1", "/ui/") == "/ui/hosts/esx1"
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/escrow", "/ui\\x", None):
        assert local_path(target, "/ui/") == "/ui/"


def test_fleet_chart_counts_each_host_with_its_latest_verdict() -> None:
    start = NOW - timedelta(minutes=30)
    hosts = [(1, start), (2, start), (3, NOW - timedelta(minutes=10))]
    verdicts = [
        (1, start + timedelta(minutes=1), "Passed"),
        (2, start + timedelta(minutes=1), "Passed"),
        (2, NOW - timedelta(minutes=5), "Failed"),
        (3, NOW - timedelta(minutes=9), "Warning"),
    ]
    drawn = chart.fleet_chart(verdicts, hosts, NOW, slices=6)
    assert len(drawn.bars) == 6
    first, last = drawn.spans[0].counts, drawn.spans[-1].counts
    assert (first["Passed"], first["Failed"], first["Warning"]) == (2, 0, 0)
    assert (last["Passed"], last["Failed"], last["Warning"]) == (1, 1, 1)
    assert "Now: 1 Passed, 1 Warning, 1 Failed" in drawn.description
    top = max(sum(s.height for s in bar.segments) for bar in drawn.bars)
    assert abs(top - drawn.plot_height) < 0.1  # the tallest bar fills the plot
    assert chart.fleet_chart([], hosts, NOW).empty


def test_host_timeline_marks_each_verdict_with_a_symbol() -> None:
    timeline = chart.host_timeline(
        [
            (NOW, "Failed", "Host secure boot was disabled"),
            (NOW - timedelta(minutes=1), "Passed", ""),
        ]
    )
    assert [m.symbol for m in timeline.markers] == ["✓", "✗"]
    assert "Host secure boot was disabled" in timeline.markers[1].title
    assert timeline.description.endswith("Latest: Failed.")


def _row(name: str, status: str, message: str = "") -> hostrows.HostRow:
    return hostrows.HostRow(
        name=name,
        status=status,
        state=hostrows.status_of(status),
        message=message,
        messages=[message] if message else [],
        last_attested_at=None,
        policy=None,
        tpm="—",
        secure_boot="On",
        mode="TPM",
        requirements=[],
        escrow=hostrows.ESCROW["complete"],
        escrow_detail="",
        alarms=0,
        search=f"{name} {message}".lower(),
    )


def test_hosts_filter_and_sort_with_the_urgent_first() -> None:
    rows = [_row("b", "passed"), _row("a", "failed", "Host secure boot was disabled")]
    rows.append(_row("c", "warning"))
    by_status = hostrows.filter_and_sort(rows, status="", text="", sort="status", descending=False)
    assert [r.name for r in by_status] == ["a", "c", "b"]
    problems = hostrows.filter_and_sort(
        rows, status="problems", text="", sort="name", descending=True
    )
    assert [r.name for r in problems] == ["c", "a"]
    found = hostrows.filter_and_sort(rows, status="", text="SECURE", sort="name", descending=False)
    assert [r.name for r in found] == ["a"]


# Every EK certificate of the corpus, as the dashboard shows its TPM: (vendor ID, kind), or None
# when the certificate names no vendor (Google's PCA certificates carry no TPM manufacturer).
EK_CERTIFICATES = {
    "keylime/derived/st_sha256_with_rsa_der.der": ("STM", "discrete"),  # 0xFF NV padding
    "keylime/derived/st_ecdsa_sha256_der.der": ("STM", "discrete"),
    # non-DER SET ordering in the issuer name
    "keylime/derived/nuvoton_NPCT75x_ek_leaf_malformed_from_test_certificate_modeltype.der": (
        "NTC",
        "discrete",
    ),
    # an explicit critical=FALSE
    "smallstep-crypto/derived/intel_ptt_rsa_ek_cert_from_ekop.der": ("INTC", "firmware"),
    **{
        f"go-tpm-tools/internal/test/certificates/{ca}_tpm_{alg}_{use}_cert.pem": (
            ("GOOG", "virtual") if ca == "uca" else None
        )
        for ca in ("uca", "pca")
        for alg in ("rsa", "ecc")
        for use in ("enc", "sign")
    },
}


@pytest.mark.corpus
@pytest.mark.parametrize("path", list(EK_CERTIFICATES))
def test_dashboard_reads_the_tpm_of_every_corpus_ek_certificate(corpus: Path, path: str) -> None:
    assert hostrows.tpm_from_certificate((corpus / path).read_bytes()) == EK_CERTIFICATES[path]


def test_dashboard_shows_no_tpm_for_a_missing_or_unreadable_certificate() -> None:
    assert hostrows.tpm_from_certificate(None) is None
    assert hostrows.tpm_from_certificate(b"") is None
    assert hostrows.tpm_from_certificate(b"\x30\x03\x02\x01") is None
