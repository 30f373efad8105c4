"""Issue 12 item 6: a bad quote signature costs a bounded number of signature checks, however
many hosts are enrolled ("which host signed this?" is answered from an index, not a search)."""

from __future__ import annotations

from datetime import timedelta

from ._many import CountingVerifier, add_hosts
from ._softtpm import SoftTpm
from .conftest import Server

FLEET = 2000


def _approve(server: Server, name: str) -> None:
    response = server.api.post(
        f"/v1/hosts/{name}/approve", token=server.operator, json={"reason": "lab host"}
    )
    assert response.status_code == 200, response.text


def test_a_bad_signature_checks_at_most_two_keys_among_thousands(
    server: Server, tpm: SoftTpm, agent: str
) -> None:
    other = SoftTpm()
    token2 = server.enrol("host2", other)["agent_token"]
    _approve(server, "host2")
    assert server.attest(token2, other)["status"] == "Warning"  # host2 reported once
    add_hosts(server.ctx, FLEET, server.clock.now())
    counting = CountingVerifier(server.ctx.settings.trust_store_dir)
    server.ctx.verifier = counting

    # signed by a key no host has: the host's own AK is checked, no other
    unknown = server.evidence(agent, tpm, key=SoftTpm().ak)
    assert unknown.status_code == 422
    assert unknown.json()["error"] == "QuoteSignatureInvalid"
    assert counting.checks <= 2, f"{counting.checks} signature checks for one bad quote"

    # a quote from host2's TPM sent with host1's token: named, with one check of host2's key
    counting.appraisals = counting.signer_checks = 0
    server.clock.advance(timedelta(seconds=1))
    stolen = server.evidence(agent, other)
    assert stolen.status_code == 422
    body = stolen.json()
    assert body["error"] == "QuoteFromAnotherHost"
    assert body["message"] == (
        "The quote sent for host 'host1' was signed by the attestation key of host 'host2': "
        "it is evidence from another machine, refused."
    )
    assert counting.checks <= 2, f"{counting.checks} signature checks for one bad quote"
    assert server.host("host1")["verdicts"][0]["error"] == "QuoteFromAnotherHost"


def test_a_good_quote_is_one_signature_check(server: Server, tpm: SoftTpm, agent: str) -> None:
    add_hosts(server.ctx, 200, server.clock.now())
    counting = CountingVerifier(server.ctx.settings.trust_store_dir)
    server.ctx.verifier = counting
    assert server.attest(agent, tpm)["status"] == "Warning"
    assert (counting.appraisals, counting.signer_checks) == (1, 0)
