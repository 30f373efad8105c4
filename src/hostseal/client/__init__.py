"""The client side of the attestation service, shared by the agent, the admin CLI and key
release: the wire models (:mod:`hostseal.client.wire`), the one HTTP client
(:mod:`hostseal.client.http`) and the check that keeps tokens off plain HTTP
(:mod:`hostseal.client.transport`).

Imports nothing of :mod:`hostseal.server`; the server imports the wire models from here.
"""
