"""hostseal doctor: from symptom to cause to remedy, for hostseal hosts and ESXi hosts alike.

* :mod:`~hostseal.doctor.knowledge` -- the knowledge base, one TOML file per finding
  (``kb/*.toml``), validated when loaded, texts translatable;
* :mod:`~hostseal.doctor.logscan` -- ESXi / vCenter / hostseal log lines to findings;
* :mod:`~hostseal.doctor.checks` -- live checks of this host (with the unlock pre-flight of
  :mod:`~hostseal.doctor.preflight`);
* :mod:`~hostseal.doctor.boardswap` -- the checklist before a system board or TPM swap.

Nothing here prints; :mod:`hostseal.cli.doctor` formats.

>>> kb = load_kb("en")                                           # doctest: +SKIP
>>> scan([LogInput("vmkernel.log", text)], kb)[0].finding.title  # doctest: +SKIP
"""

from hostseal.doctor.boardswap import SwapItem, SwapReport, before_board_swap
from hostseal.doctor.checks import CheckResult, evaluate, explanations, failed, run
from hostseal.doctor.errors import KnowledgeBaseInvalid
from hostseal.doctor.knowledge import Finding, KnowledgeBase, load_kb, negotiate
from hostseal.doctor.logscan import Evidence, LogFinding, LogInput, scan
from hostseal.doctor.observe import HostState, observe
from hostseal.doctor.preflight import Preflight

__all__ = [
    "CheckResult",
    "Evidence",
    "Finding",
    "HostState",
    "KnowledgeBase",
    "KnowledgeBaseInvalid",
    "LogFinding",
    "LogInput",
    "Preflight",
    "SwapItem",
    "SwapReport",
    "before_board_swap",
    "evaluate",
    "explanations",
    "failed",
    "load_kb",
    "negotiate",
    "observe",
    "run",
    "scan",
]
