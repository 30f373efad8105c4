"""Token management over the API (issue 12, item 16): admin only, audited with a reason; a new
token is shown once, lists never show a secret, a revoked token stops working at once."""

from __future__ import annotations

import pytest

from hostseal.server.tokens import token_hash

from .conftest import Server


def test_admin_creates_lists_and_revokes_a_token_all_audited(server: Server) -> None:
    created = server.api.post(
        "/v1/tokens",
        token=server.admin,
        json={"name": "bob", "role": "operator", "reason": "on call this quarter, ticket 7"},
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    assert body["name"] == "bob" and body["role"] == "operator"
    secret = body["token"]
    assert secret.startswith("hst_")
    assert server.api.get("/v1/hosts", token=secret).status_code == 200

    listed = server.api.get("/v1/tokens", token=server.admin)
    assert listed.status_code == 200
    [bob] = [t for t in listed.json() if t["name"] == "bob"]
    assert bob["role"] == "operator" and bob["revoked_at"] is None
    text = listed.text
    assert secret not in text and token_hash(secret) not in text
    assert all(set(t) == {"name", "role", "created_at", "revoked_at"} for t in listed.json())

    [made] = server.audit(action="token.created")
    assert made["who"] == "admin-1" and made["role"] == "admin"
    assert made["reason"] == "on call this quarter, ticket 7"
    assert made["details"] == {"name": "bob", "role": "operator"}
    assert secret not in str(made)

    no_reason = server.api.delete("/v1/tokens/bob", token=server.admin)
    assert no_reason.status_code == 422
    assert no_reason.json()["error"] == "ReasonRequired"
    revoked = server.api.delete(
        "/v1/tokens/bob", token=server.admin, params={"reason": "left the team"}
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"name": "bob", "revoked": 1}
    refused = server.api.get("/v1/hosts", token=secret)
    assert refused.status_code == 401
    [gone] = server.audit(action="token.revoked")
    assert gone["reason"] == "left the team"
    assert gone["details"] == {"name": "bob", "roles": ["operator"]}

    again = server.api.delete("/v1/tokens/bob", token=server.admin, params={"reason": "x"})
    assert again.status_code == 404
    assert again.json()["message"] == "No active token is named 'bob'."


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_manage_tokens(server: Server, role: str) -> None:
    token = getattr(server, role)
    for method, path, body in [
        ("GET", "/v1/tokens", None),
        ("POST", "/v1/tokens", {"name": "eve", "role": "admin", "reason": "me"}),
        ("DELETE", "/v1/tokens/admin-1?reason=x", None),
    ]:
        response = server.api.request(method, path, token=token, json=body)
        assert response.status_code == 403, (method, response.text)
        assert response.json()["message"].startswith("Only the admin role may manage API tokens")
    assert server.api.get("/v1/tokens").status_code == 401
    assert server.audit(action="token.created") == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"name": "eve", "role": "operator"}, "ReasonRequired"),
        ({"name": "eve", "role": "operator", "reason": "  "}, "ReasonRequired"),
        ({"name": "eve", "role": "agent", "reason": "r"}, "Unprocessable"),
        ({"name": "eve", "role": "root", "reason": "r"}, "Unprocessable"),
        ({"name": "", "role": "viewer", "reason": "r"}, "RequestInvalid"),
        ({"name": "eve\n", "role": "viewer", "reason": "r"}, "RequestInvalid"),
        ({"name": "agent:host1", "role": "viewer", "reason": "r"}, "RequestInvalid"),
        ({"name": "e" * 200, "role": "viewer", "reason": "r"}, "RequestInvalid"),
        ({"name": "admin-1", "role": "viewer", "reason": "r"}, "Conflict"),
    ],
)
def test_refused_token_requests_create_nothing(
    server: Server, body: dict[str, str], error: str
) -> None:
    response = server.api.post("/v1/tokens", token=server.admin, json=body)
    assert response.status_code in (409, 422), response.text
    assert response.json()["error"] == error, response.text
    names = [t["name"] for t in server.api.get("/v1/tokens", token=server.admin).json()]
    assert sorted(names) == ["admin-1", "operator-1", "viewer-1"]
    assert server.audit(action="token.created") == []


def test_agent_tokens_cannot_be_revoked_here(server: Server, agent: str) -> None:
    response = server.api.delete(
        "/v1/tokens/agent:host1", token=server.admin, params={"reason": "r"}
    )
    assert response.status_code == 404
    assert server.api.post("/v1/attest/challenge", token=agent, json={}).status_code == 200


@pytest.mark.parametrize("name", ["alice\n", "a b", "", "../x", "a" * 101, "al\x00ice", "-x"])
def test_a_token_name_must_match_in_full_wherever_it_is_made(server: Server, name: str) -> None:
    """The local command (``hostseal server token create``) and the API share one rule."""
    from hostseal.server.errors import Unprocessable
    from hostseal.server.tokens import create_token

    with server.ctx.sessions.begin() as session, pytest.raises(Unprocessable) as err:
        create_token(session, name=name, role="viewer", now=server.clock.now())
    assert err.value.message == f"{name[:100]!r} is not a token name."
    assert "letters, digits" in err.value.remedy
