"""Simulated hosts for tests and the demo: swtpm plus a firmware simulation.

See :mod:`hostseal.lab.host` for the operations and :mod:`hostseal.lab.firmware` for what a
boot measures.
"""

from hostseal.lab.firmware import LAB_BANKS, BootConfig, Extend, measure_boot
from hostseal.lab.host import (
    DEFAULT_BANKS,
    LabError,
    LabHost,
    banks_text,
    check_banks,
    clear_tpm,
    destroy,
    env_lines,
    list_hosts,
    load,
    reboot,
    replace_tpm,
    start,
    stop,
)

__all__ = [
    "DEFAULT_BANKS",
    "LAB_BANKS",
    "BootConfig",
    "Extend",
    "LabError",
    "LabHost",
    "banks_text",
    "check_banks",
    "clear_tpm",
    "destroy",
    "env_lines",
    "list_hosts",
    "load",
    "measure_boot",
    "reboot",
    "replace_tpm",
    "start",
    "stop",
]
