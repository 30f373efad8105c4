"""Server settings from the environment, and the generated TLS material."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from hostseal.server.http.tls import TlsSetupFailed, ensure_tls
from hostseal.server.settings import ServerSettings, ServerSettingsInvalid


def test_defaults_and_environment() -> None:
    default = ServerSettings.from_env({})
    assert default.data_dir == Path("/var/lib/hostseal/server")
    assert default.db_url == "sqlite:////var/lib/hostseal/server/hostseal.db"
    assert default.bind_address == ("127.0.0.1", 8443)
    assert default.ek_policy == "approve"
    assert default.stale_after == timedelta(minutes=15)
    assert default.nonce_lifetime == timedelta(seconds=120)
    env = ServerSettings.from_env(
        {
            "HOSTSEAL_SERVER_DATA": "/srv/h",
            "HOSTSEAL_SERVER_BIND": "[::1]:9443",
            "HOSTSEAL_SERVER_EK_POLICY": "require-chain",
            "HOSTSEAL_SERVER_STALE_AFTER": "60",
            "HOSTSEAL_SERVER_TLS_NAMES": "a.example, b.example",
        }
    )
    assert env.db_url == "sqlite:////srv/h/hostseal.db"
    assert env.bind_address == ("::1", 9443)
    assert env.ek_policy == "require-chain"
    assert env.stale_after == timedelta(seconds=60)
    assert env.tls_names == ("a.example", "b.example")
    assert env.with_overrides(bind="0.0.0.0:1", data_dir=None).bind == "0.0.0.0:1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOSTSEAL_SERVER_EK_POLICY": "trust-all"}, "'trust-all' is not an EK policy."),
        ({"HOSTSEAL_SERVER_STALE_AFTER": "soon"}, "is not a number of seconds"),
        ({"HOSTSEAL_SERVER_NONCE_LIFETIME": "-5"}, "is not a number of seconds"),
    ],
)
def test_bad_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ServerSettingsInvalid, match=message):
        ServerSettings.from_env(env)
    with pytest.raises(ServerSettingsInvalid, match="is not a bind address"):
        _ = ServerSettings(bind="8443").bind_address


def test_tls_material_is_generated_once_and_renewed_when_needed(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, tls_names=("attest.example",))
    files = ensure_tls(settings)
    assert files.ca is not None
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "attest.example"} <= set(san.get_values_for_type(x509.DNSName))
    first = files.cert.read_bytes()
    assert ensure_tls(settings).cert.read_bytes() == first  # nothing to do
    more = ServerSettings(data_dir=tmp_path, tls_names=("attest.example", "new.example"))
    assert ensure_tls(more).cert.read_bytes() != first  # a new name: issued again
    ca = (tmp_path / "tls" / "ca.pem").read_bytes()
    late = datetime.now(UTC) + timedelta(days=340)
    renewed = ensure_tls(more, now=late)
    assert (tmp_path / "tls" / "ca.pem").read_bytes() == ca  # same CA
    assert x509.load_pem_x509_certificate(renewed.cert.read_bytes()).not_valid_after_utc > (
        late + timedelta(days=300)
    )


def test_own_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    with pytest.raises(TlsSetupFailed, match="Only one of the TLS certificate and key"):
        ensure_tls(ServerSettings(data_dir=tmp_path, tls_cert=cert))
    with pytest.raises(TlsSetupFailed, match="does not exist"):
        ensure_tls(ServerSettings(data_dir=tmp_path, tls_cert=cert, tls_key=key))
    cert.write_text("x")
    key.write_text("y")
    files = ensure_tls(ServerSettings(data_dir=tmp_path, tls_cert=cert, tls_key=key))
    assert (files.cert, files.key, files.ca) == (cert, key, None)
    assert not (tmp_path / "tls").exists()
