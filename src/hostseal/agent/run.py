"""The agent's work: enrol once, then attest (and escrow recovery keys) on an interval.

Enrolment (docs/api.md): a fresh AK under the storage primary; ``enrol/start`` with the EK
public key (and its certificate where the TPM has one) and the AK; the server answers with
MakeCredential; ``ActivateCredential`` recovers its secret, which only this TPM can;
``enrol/finish`` returns the agent token.

An attestation: ``attest/challenge`` gives a fresh nonce and the PCRs to quote; the agent quotes
them with the AK and sends the quote, the PCR values, the event log and the sealed-configuration
status (with a key check value per recovery slot); the server answers with the verdict. Recovery
keys are escrowed whenever the set of recovery slots changed since the last escrow.

A boot that left no event log (:class:`hostseal.hostinfo.NoEventLog`) is still attested: the
quote goes without a log, the service's verdict says what could not be checked, and the agent
reports the missing log with what to do on every attempt (``AttestOutcome.problems``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from hostseal.agent.state import AgentState
from hostseal.client.http import ApiError, Client, tls_verify
from hostseal.client.transport import check_server_url
from hostseal.client.wire import (
    ChallengeOut,
    EnrolFinish,
    EnrolFinished,
    EnrolStart,
    EnrolStarted,
    EscrowIn,
    EscrowKey,
    EscrowOut,
    EvidenceIn,
    RecoveryKeyCheck,
    SecureConfig,
    VerdictOut,
    b64,
)
from hostseal.errors import HostsealError
from hostseal.hostinfo import NoEventLog, read_eventlog
from hostseal.secureconfig import manager
from hostseal.secureconfig.recoverykey import key_check_value
from hostseal.secureconfig.store import NoBundle, Reader
from hostseal.tpm import Tpm, open_tpm
from hostseal.tpm.attestation import AkUnavailable, activate_credential, create_ak, quote

log = logging.getLogger("hostseal.agent")
# the server's answers when this TPM is not the one enrolled under the name (docs/api.md)
_HELD = ("TpmChangeRequested", "TpmChangeRejected", "TooManyTpmChangeRequests")


@dataclass(frozen=True)
class AgentConfig:
    name: str
    server: str
    ca: Path | None
    tcti: str
    eventlog: Path
    bootbank: Path
    state_dir: Path
    interval: float = 300.0
    escrow: bool = True  # upload recovery keys to the service when they change
    allow_plain_http_loopback: bool = False  # development only (hostseal.client.transport)
    # a file holding an enrolment token (a server with HOSTSEAL_SERVER_ENROLMENT=token)
    enrolment_token_file: Path | None = None


@dataclass
class AttestOutcome:
    status: str
    messages: list[str] = field(default_factory=list)
    escrowed: int = 0
    # what the agent found wrong on this host, each with what to do (a boot without event log)
    problems: list[HostsealError] = field(default_factory=list)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        # refuse a plain-HTTP server now, before the TPM is touched or a token is sent
        check_server_url(config.server, allow_plain_http_loopback=config.allow_plain_http_loopback)
        self.config = config
        self.state = AgentState(config.state_dir)

    def _client(self, token: str | None) -> Client:
        return Client(
            self.config.server,
            token,
            tls_verify(self.config.ca, self.config.server),
            allow_plain_http_loopback=self.config.allow_plain_http_loopback,
        )

    # -- enrolment ---------------------------------------------------------------------------
    def _ek_kind(self, tpm: Tpm) -> tuple[str, bytes | None]:
        for kind in ("rsa", "ecc"):
            cert = tpm.ek_certificate(kind)
            if cert is not None:
                return kind, cert
        return "ecc", None

    def _enrolment_token(self) -> str | None:
        path = self.config.enrolment_token_file
        if path is None:
            return None
        try:
            return path.read_text().strip() or None
        except OSError as exc:
            raise HostsealError(
                f"Cannot read the enrolment token file {path}: {exc.strerror}.",
                "Give the file an admin's enrolment token is in (hostseal host enrolment-token).",
            ) from exc

    def enrol(self) -> str:
        """Enrol with the service; returns the status it gave (``enrolled``, ...)."""
        enrolment_token = self._enrolment_token()
        with open_tpm(self.config.tcti) as tpm:
            kind, cert = self._ek_kind(tpm)
            ak = create_ak(tpm)
            ek_public = tpm.ek_public(kind)
            client = self._client(None)
            try:
                start = EnrolStart(
                    name=self.config.name,
                    ek_public=b64(ek_public),
                    ek_certificate=b64(cert) if cert else None,
                    ak_public=b64(ak.public),
                    enrolment_token=enrolment_token,
                )
                started = client.send("POST", "/v1/enrol/start", start, EnrolStarted)
                secret = activate_credential(
                    tpm,
                    ak,
                    kind,
                    base64.b64decode(started.credential_blob),
                    base64.b64decode(started.encrypted_secret),
                )
                finish = EnrolFinish(enrolment_id=started.enrolment_id, secret=b64(secret))
                finished = client.send("POST", "/v1/enrol/finish", finish, EnrolFinished)
            except ApiError as err:
                if err.kind in _HELD:
                    # another TPM is enrolled under this name: an operator must decide
                    log.error("enrolment of %s held by the server: %s", self.config.name, err)
                raise
            finally:
                client.close()
        self.state.save_ak(ak, kind)
        self.state.save_token(finished.agent_token)
        log.info("enrolled as %s: %s", self.config.name, finished.status)
        return finished.status

    # -- attestation -------------------------------------------------------------------------
    def _secure_config(self) -> tuple[SecureConfig | None, list[EscrowKey]]:
        """The sealed configuration's status with a KCV per recovery slot, and the keys to
        escrow when the slots changed since the last escrow."""
        ctx = manager.HostContext(self.config.tcti, self.config.eventlog, self.config.bootbank)
        try:
            status = manager.status(ctx)
        except NoBundle:
            return None, []
        ids = [str(i) for i in status["recovery_key_ids"]]  # type: ignore[attr-defined]
        escrowed = self.state.escrowed()
        to_escrow: list[EscrowKey] = []
        if self.config.escrow and set(ids) != set(escrowed):
            # Audited in the bootbank's audit log as the agent's read, not a person's.
            where = urlsplit(self.config.server)
            keys = manager.recovery_list(
                ctx, f"escrow to {where.scheme}://{where.netloc.rpartition('@')[2]}", Reader.AGENT
            )
            escrowed = {k.formatted_id: key_check_value(k.recovery_id, k.secret) for k in keys}
            to_escrow = [EscrowKey(recovery_id=k.formatted_id, key=k.formatted_key) for k in keys]
        checks = [RecoveryKeyCheck(recovery_id=i, kcv=escrowed[i]) for i in ids if i in escrowed]
        return SecureConfig(
            mode=str(status["mode"]),
            require_secure_boot=bool(status["require_secure_boot"]),
            require_exec_installed_only=bool(status["require_exec_installed_only"]),
            recovery_key_checks=checks,
        ), to_escrow

    def attest_once(self) -> AttestOutcome:
        """Enrol if needed, then one attestation (and escrow when keys changed)."""
        loaded = self.state.load_ak()
        if loaded is None or self.state.token() is None:
            self.enrol()
            loaded = self.state.load_ak()
            assert loaded is not None
        ak, _ = loaded
        client = self._client(self.state.token())
        try:
            challenge = client.send("POST", "/v1/attest/challenge", None, ChallengeOut)
            nonce = bytes.fromhex(challenge.nonce)
            with open_tpm(self.config.tcti) as tpm:
                try:
                    quoted = quote(tpm, ak, nonce, challenge.bank, challenge.pcrs)
                except AkUnavailable:
                    log.warning("the AK no longer loads (TPM replaced or cleared): enrolling again")
                    self.state.forget_enrolment()
                    raise
            problems: list[HostsealError] = []
            try:
                eventlog = read_eventlog(self.config.eventlog)
            except NoEventLog as err:  # attested without: the verdict says what went unchecked
                eventlog, problems = b"", [err]
            secure_config, to_escrow = self._secure_config()
            evidence = EvidenceIn.of_quote(
                nonce=challenge.nonce,
                challenge=challenge.challenge,
                quote=quoted.attest,
                signature=quoted.signature,
                pcrs={quoted.bank: quoted.pcrs},
                eventlog=eventlog or None,
                secure_config=secure_config,
            )
            digest = hashlib.sha256(eventlog).hexdigest() if eventlog else None
            if digest is not None and challenge.eventlog_sha256 == digest:
                # the server holds this boot's log already: send its digest, not 50 KB again
                known = evidence.model_copy(update={"eventlog": None, "eventlog_sha256": digest})
                try:
                    verdict = client.send("POST", "/v1/attest/evidence", known, VerdictOut)
                except ApiError as err:
                    if err.kind != "EventLogUnknown":
                        raise
                    # the server's copy changed meanwhile: the same quote with the log itself
                    verdict = client.send("POST", "/v1/attest/evidence", evidence, VerdictOut)
            else:
                verdict = client.send("POST", "/v1/attest/evidence", evidence, VerdictOut)
            escrowed = 0
            if to_escrow:
                client.send("POST", "/v1/escrow", EscrowIn(keys=to_escrow), EscrowOut)
                escrowed = len(to_escrow)
                if secure_config is not None:
                    self.state.save_escrowed(
                        {c.recovery_id: c.kcv for c in secure_config.recovery_key_checks}
                    )
        finally:
            client.close()
        return AttestOutcome(verdict.status, list(verdict.messages), escrowed, problems)

    def run(self, *, once: bool = False, sleep: Callable[[float], None] = time.sleep) -> None:
        """Attest now and then every ``interval`` seconds; on errors retry with backoff."""
        backoff = 5.0
        while True:
            try:
                outcome = self.attest_once()
            except (HostsealError, OSError, ValidationError) as err:
                # ValidationError: what this host would send is past a bound of the wire model
                if once:
                    raise
                if isinstance(err, ApiError) and err.status == 401:
                    self.state.forget_enrolment()  # the server no longer knows this token
                log.warning("attestation failed: %s; retrying in %.0f s", err, backoff)
                sleep(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, self.config.interval)
                continue
            backoff = 5.0
            for problem in outcome.problems:
                log.error("%s What to do: %s", problem.message, problem.remedy)
            log.info("attested: %s %s", outcome.status, "; ".join(outcome.messages))
            if once:
                return
            sleep(self.config.interval)
