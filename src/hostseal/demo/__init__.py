"""The demonstration fleet behind ``hostseal demo``, the README's run command
(:mod:`hostseal.demo.fleet`): the attestation service and lab hosts with their agents, as
processes. A top layer, like the CLI: it may use everything below it. (The sealed-configuration
story, ``hostseal demo seal``, is a CLI command: :mod:`hostseal.cli.demo`.)"""
