"""The ``hostseal`` command: thin click commands over the library."""
