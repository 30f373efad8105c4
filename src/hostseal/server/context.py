"""Everything a request needs, built once per server: settings, clock, database, keys."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from hostseal.server import datadir
from hostseal.server.challenges import PURPOSE as CHALLENGE_PURPOSE
from hostseal.server.clock import Clock, SystemClock
from hostseal.server.refusals import Refusals
from hostseal.server.serverkey import ServerKey, load_or_create
from hostseal.server.settings import ServerSettings
from hostseal.server.signers import SignerIndex
from hostseal.server.storage import engine as db
from hostseal.server.storage.writer import BatchWriter
from hostseal.server.verify import PolicyFacts, Verifier


@dataclass
class ServerContext:
    settings: ServerSettings
    clock: Clock
    verifier: Verifier
    engine: Engine
    sessions: sessionmaker[Session]
    server_key: ServerKey
    # the one cache of parsed policies, by document digest (a new version has a new digest:
    # never stale); kept by hostseal.server.attestation
    policy_cache: dict[str, PolicyFacts] = field(default_factory=dict)
    # which host's AK signed a quote (hostseal.server.signers); refusal counters (.refusals)
    signers: SignerIndex = field(default_factory=SignerIndex)
    refusals: Refusals = field(default_factory=Refusals)

    @functools.cached_property
    def writer(self) -> BatchWriter:
        """The attestation path's writes, grouped into one commit per batch
        (:mod:`hostseal.server.storage.writer`)."""
        return BatchWriter(self.sessions)

    @property
    def challenge_key(self) -> bytes:
        """The key of challenge tickets (:mod:`hostseal.server.challenges`), from the server
        key: instances that share the server key check each other's challenges."""
        key = self.__dict__.get("_challenge_key")
        if key is None:
            key = self.__dict__["_challenge_key"] = self.server_key.mac_key(CHALLENGE_PURPOSE)
        assert isinstance(key, bytes)
        return key

    @classmethod
    def open(
        cls,
        settings: ServerSettings,
        *,
        clock: Clock | None = None,
        verifier: Verifier | None = None,
    ) -> ServerContext:
        """Create the data directory (0700; an existing one open to others is refused) and the
        server key if needed, migrate the DB."""
        datadir.prepare(settings.data_dir)  # 0700; refused when others can read it
        server_key = load_or_create(settings.server_key_path)
        datadir.private_sqlite(settings.db_url)  # 0600 (and so its WAL and SHM)
        engine = db.make_engine(settings.db_url)
        db.migrate(engine)
        return cls(
            settings=settings,
            clock=clock or SystemClock(),
            verifier=verifier or Verifier(settings.trust_store_dir),
            engine=engine,
            sessions=db.session_factory(engine),
            server_key=server_key,
        )

    def close(self) -> None:
        if "writer" in self.__dict__:
            self.writer.close()
        self.engine.dispose()
