"""Alembic migrations of the service's database, run by
:func:`hostseal.server.storage.engine.migrate`."""
