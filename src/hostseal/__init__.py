"""hostseal: trust for hypervisor hosts with TPM 2.0.

The package is organised by concern (see ``docs/architecture.md``):

* :mod:`hostseal.measure` -- pure TCG event-log parsing, replay and diff;
* :mod:`hostseal.tpm` -- the only importer of ``tpm2_pytss``;
* :mod:`hostseal.lab` -- simulated hosts (swtpm + firmware simulation) for tests and the demo;
* :mod:`hostseal.cli` -- the ``hostseal`` command.
"""

__version__ = "0.1.0"
