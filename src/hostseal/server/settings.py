"""Settings of the attestation service (``hostseal server``).

Precedence, lowest first: built-in default < environment variable < command-line flag. Nothing is
read at import time: the CLI builds one :class:`ServerSettings` with :meth:`ServerSettings.from_env`
and overrides fields from its flags.

- ``data_dir`` -- ``HOSTSEAL_SERVER_DATA`` / ``--data-dir``; default ``/var/lib/hostseal/server``.
- ``database_url`` -- ``HOSTSEAL_SERVER_DB`` / ``--db``; default ``sqlite:///<data_dir>/hostseal.db``.
  PostgreSQL: ``postgresql://user@db/hostseal`` (psycopg 3 is used; ``postgresql+psycopg://`` too).
- ``instance_name`` -- ``HOSTSEAL_SERVER_INSTANCE``: how this instance is shown among the
  instances sharing the database; default ``<host name>:<port>``.
- ``heartbeat_every`` -- ``HOSTSEAL_SERVER_HEARTBEAT`` (seconds); default 10. An instance whose
  heartbeat is older than 3 intervals is shown as not alive.
- ``bind`` -- ``HOSTSEAL_SERVER_BIND`` / ``--bind``; default ``127.0.0.1:8443``.
- ``ek_policy`` -- ``HOSTSEAL_SERVER_EK_POLICY`` / ``--ek-policy``: ``approve`` (default) or
  ``require-chain``.
- ``enrolment`` -- ``HOSTSEAL_SERVER_ENROLMENT``: ``open`` (default: any TPM may enrol; a new
  name waits for approval without a trusted EK chain, a known name becomes a TPM change
  request) or ``token`` (``/v1/enrol/*`` also needs a one-time enrolment token made by an admin:
  ``hostseal host enrolment-token``).
- ``trust_store`` -- ``HOSTSEAL_SERVER_TRUST_STORE``: TPM vendor CA certificates that EK
  certificates must chain to; default ``/etc/hostseal/tpm-ca`` (as everywhere in hostseal).
- ``report_interval`` -- ``HOSTSEAL_SERVER_REPORT_INTERVAL`` (seconds); default 300: how often
  agents are expected to attest (``hostseal agent run --interval``, 300 by default).
- ``stale_intervals`` -- ``HOSTSEAL_SERVER_STALE_INTERVALS``; default 3: a host with no
  attestation for this many report intervals is ``not-reporting`` (shown so at once, alarmed by
  the ``stale-hosts`` job, refused vTPM keys).
- ``stale_after`` -- ``HOSTSEAL_SERVER_STALE_AFTER`` (seconds); default ``report_interval`` x
  ``stale_intervals`` (900); when set, it is used as is.
- ``staleness_check_every`` -- ``HOSTSEAL_SERVER_STALE_CHECK`` (seconds); default 60: how often
  the ``stale-hosts`` job runs (once for all instances).
- ``nonce_lifetime`` -- ``HOSTSEAL_SERVER_NONCE_LIFETIME`` (seconds); default 120.
- ``max_eventlog`` -- ``HOSTSEAL_SERVER_MAX_EVENTLOG`` (bytes); default 1048576 (1 MiB): the
  largest event log the service takes and stores per host; a larger one is refused (413). Real
  UEFI logs are 20-100 KiB (the largest of the test corpus is 72 KiB).
- ``enrolment_lifetime`` -- ``HOSTSEAL_SERVER_ENROL_LIFETIME`` (seconds); default 300.
- ``tls_cert`` / ``tls_key`` / ``tls_ca`` -- ``HOSTSEAL_SERVER_TLS_CERT`` / ``_KEY`` / ``_CA``;
  default: generated under ``<data_dir>/tls`` (:mod:`hostseal.server.http.tls`).
- ``tls_names`` -- ``HOSTSEAL_SERVER_TLS_NAMES``: extra names for the server certificate,
  comma-separated.
- ``max_body`` -- ``HOSTSEAL_SERVER_MAX_BODY`` (bytes); default 1048576 (1 MiB): the largest
  request body of every route but the evidence; a larger one is refused (413) before it is read.
- ``max_evidence_body`` -- ``HOSTSEAL_SERVER_MAX_EVIDENCE_BODY`` (bytes); default 16777216
  (16 MiB): the largest body of ``POST /v1/attest/evidence`` (the event log rides in it).
- ``enrol_per_minute`` -- ``HOSTSEAL_SERVER_ENROL_PER_MINUTE``; default 60: enrolment requests
  (``/v1/enrol/start`` and, counted apart, ``/v1/enrol/finish``) one client address may make in a
  minute (a burst of as many, refilled evenly); more get 429 with ``Retry-After``.
- ``login_per_minute`` -- ``HOSTSEAL_SERVER_LOGIN_PER_MINUTE``; default 10: dashboard login
  attempts per client address and minute.
- ``metrics_access`` -- ``HOSTSEAL_SERVER_METRICS``: ``token`` (default: ``/metrics`` needs a
  token, of the ``metrics`` role or any user role) or ``open`` (anyone who can reach the port).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

from hostseal.client.defaults import DEFAULT_SERVER_DATA, TLS_DIR
from hostseal.errors import HostsealError

DEFAULT_BIND = "127.0.0.1:8443"
DEFAULT_TRUST_STORE = Path("/etc/hostseal/tpm-ca")  # = hostseal.attest.DEFAULT_TPM_CA_DIR
EK_POLICIES = ("approve", "require-chain")
EkPolicy = Literal["approve", "require-chain"]
MetricsAccess = Literal["token", "open"]
EnrolmentMode = Literal["open", "token"]
DEFAULT_MAX_BODY = 1024 * 1024  # bytes: a policy document or a form is a few KiB
DEFAULT_MAX_EVIDENCE_BODY = 16 * 1024 * 1024  # bytes: the event log, base64, with room to spare
DEFAULT_MAX_EVENTLOG = 1024 * 1024  # bytes: over ten times the largest real log seen (72 KiB)


class ServerSettingsInvalid(HostsealError):
    """A server setting (flag or environment variable) has a value that cannot be used."""


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8443`` for IPv6) as a host and a port number."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServerSettingsInvalid(
            f"{text!r} is not a bind address.",
            "Give HOST:PORT, for example 127.0.0.1:8443 or 0.0.0.0:8443.",
        )
    return host.strip("[]"), int(port)


def _positive(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ServerSettingsInvalid(
            f"{name}={raw!r} is not a number of {unit}.", f"Set {name} to a positive integer."
        )
    return value


def _seconds(env: Mapping[str, str], name: str, default: int) -> timedelta:
    return timedelta(seconds=_positive(env, name, default, "seconds"))


def check_ek_policy(value: str) -> EkPolicy:
    if value == "approve":
        return "approve"
    if value == "require-chain":
        return "require-chain"
    raise ServerSettingsInvalid(
        f"{value!r} is not an EK policy.", "Use 'approve' (the default) or 'require-chain'."
    )


def check_enrolment(value: str) -> EnrolmentMode:
    if value == "open":
        return "open"
    if value == "token":
        return "token"
    raise ServerSettingsInvalid(
        f"HOSTSEAL_SERVER_ENROLMENT={value!r} is not an enrolment mode.",
        "Use 'open' (the default) or 'token' (enrolment needs an enrolment token).",
    )


def check_metrics_access(value: str) -> MetricsAccess:
    if value == "token":
        return "token"
    if value == "open":
        return "open"
    raise ServerSettingsInvalid(
        f"HOSTSEAL_SERVER_METRICS={value!r} is not a metrics access mode.",
        "Use 'token' (the default: /metrics needs a token) or 'open'.",
    )


@dataclass(frozen=True)
class ServerSettings:
    """Where the service keeps its state and how it treats hosts. See the module's table."""

    data_dir: Path = DEFAULT_SERVER_DATA
    database_url: str | None = None
    bind: str = DEFAULT_BIND
    ek_policy: EkPolicy = "approve"
    enrolment: EnrolmentMode = "open"
    trust_store: Path | None = None
    stale_after: timedelta = timedelta(minutes=15)  # report_interval x stale_intervals
    report_interval: timedelta = timedelta(minutes=5)
    stale_intervals: int = 3
    nonce_lifetime: timedelta = timedelta(seconds=120)
    max_eventlog: int = DEFAULT_MAX_EVENTLOG
    enrolment_lifetime: timedelta = timedelta(seconds=300)
    staleness_check_every: timedelta = timedelta(seconds=60)
    heartbeat_every: timedelta = timedelta(seconds=10)
    instance_name: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_names: tuple[str, ...] = ()
    max_body: int = DEFAULT_MAX_BODY
    max_evidence_body: int = DEFAULT_MAX_EVIDENCE_BODY
    enrol_per_minute: int = 60
    login_per_minute: int = 10
    metrics_access: MetricsAccess = "token"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        names = tuple(n.strip() for n in env.get("HOSTSEAL_SERVER_TLS_NAMES", "").split(","))
        interval = _seconds(env, "HOSTSEAL_SERVER_REPORT_INTERVAL", 300)
        intervals = _positive(env, "HOSTSEAL_SERVER_STALE_INTERVALS", 3, "intervals")
        stale = int(interval.total_seconds()) * intervals
        return cls(
            data_dir=path("HOSTSEAL_SERVER_DATA") or DEFAULT_SERVER_DATA,
            database_url=env.get("HOSTSEAL_SERVER_DB") or None,
            bind=env.get("HOSTSEAL_SERVER_BIND") or DEFAULT_BIND,
            ek_policy=check_ek_policy(env.get("HOSTSEAL_SERVER_EK_POLICY") or "approve"),
            enrolment=check_enrolment(env.get("HOSTSEAL_SERVER_ENROLMENT") or "open"),
            trust_store=path("HOSTSEAL_SERVER_TRUST_STORE"),
            stale_after=_seconds(env, "HOSTSEAL_SERVER_STALE_AFTER", stale),
            report_interval=interval,
            stale_intervals=intervals,
            nonce_lifetime=_seconds(env, "HOSTSEAL_SERVER_NONCE_LIFETIME", 120),
            max_eventlog=_positive(
                env, "HOSTSEAL_SERVER_MAX_EVENTLOG", DEFAULT_MAX_EVENTLOG, "bytes"
            ),
            enrolment_lifetime=_seconds(env, "HOSTSEAL_SERVER_ENROL_LIFETIME", 300),
            tls_cert=path("HOSTSEAL_SERVER_TLS_CERT"),
            tls_key=path("HOSTSEAL_SERVER_TLS_KEY"),
            tls_ca=path("HOSTSEAL_SERVER_TLS_CA"),
            tls_names=tuple(n for n in names if n),
            staleness_check_every=_seconds(env, "HOSTSEAL_SERVER_STALE_CHECK", 60),
            heartbeat_every=_seconds(env, "HOSTSEAL_SERVER_HEARTBEAT", 10),
            instance_name=env.get("HOSTSEAL_SERVER_INSTANCE") or None,
            max_body=_positive(env, "HOSTSEAL_SERVER_MAX_BODY", DEFAULT_MAX_BODY, "bytes"),
            max_evidence_body=_positive(
                env, "HOSTSEAL_SERVER_MAX_EVIDENCE_BODY", DEFAULT_MAX_EVIDENCE_BODY, "bytes"
            ),
            enrol_per_minute=_positive(
                env, "HOSTSEAL_SERVER_ENROL_PER_MINUTE", 60, "requests a minute"
            ),
            login_per_minute=_positive(
                env, "HOSTSEAL_SERVER_LOGIN_PER_MINUTE", 10, "requests a minute"
            ),
            metrics_access=check_metrics_access(env.get("HOSTSEAL_SERVER_METRICS") or "token"),
        )

    def with_overrides(self, **changes: object) -> ServerSettings:
        """A copy with the non-``None`` values of ``changes`` applied (flags over environment)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]

    @property
    def db_url(self) -> str:
        """The database URL: the setting, or the SQLite file in the data directory. A plain
        ``postgresql://`` (or ``postgres://``) URL names the psycopg 3 driver."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'hostseal.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    @property
    def bind_address(self) -> tuple[str, int]:
        return parse_bind(self.bind)

    @property
    def trust_store_dir(self) -> Path:
        """Directory of PEM/DER CA certificates that EK certificates must chain to."""
        return self.trust_store or DEFAULT_TRUST_STORE

    @property
    def server_key_path(self) -> Path:
        """The escrow wrapping key: outside the database, next to it, mode 0600."""
        return self.data_dir / "server.key"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / TLS_DIR
