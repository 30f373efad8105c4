"""``python -m hostseal.cli``: the same as the ``hostseal`` command."""

from hostseal.cli.main import main

main()
