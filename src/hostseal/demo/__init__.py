"""Demonstrations on lab hosts: the README's run command (:mod:`hostseal.demo.fleet`) and the
sealed-configuration story (``hostseal demo seal``). A top layer, like the CLI: it may use
everything below it."""
