"""The host agent: enrols with the attestation service, attests on an interval, escrows keys.

Everything is initiated by the host (no inbound port): see ``docs/api.md`` for the protocol and
:mod:`hostseal.agent.run` for the loop.
"""

from hostseal.agent.run import Agent, AgentConfig, AttestOutcome

__all__ = ["Agent", "AgentConfig", "AttestOutcome"]
