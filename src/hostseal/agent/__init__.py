"""The host agent: enrols with the attestation service, attests on an interval, escrows keys.

Everything is initiated by the host (no inbound port): see ``docs/api.md`` for the protocol and
:mod:`hostseal.agent.run` for the loop. ``Agent``, ``AgentConfig`` and ``AttestOutcome`` are
loaded from :mod:`~.run` on first use, so that reading the agent's state
(:mod:`~.state`) loads neither the HTTP client nor the TPM stack.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hostseal.agent.run import Agent, AgentConfig, AttestOutcome

__all__ = ["Agent", "AgentConfig", "AttestOutcome"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hostseal.agent import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
