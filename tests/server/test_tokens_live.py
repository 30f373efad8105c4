"""Token management over the API against a real ``hostseal server run`` (TLS), driven by the
remote CLI ``hostseal token create|list|revoke`` (issue 12, item 16)."""

from __future__ import annotations

import json
from pathlib import Path

from _service import live_service


def test_admin_manages_tokens_remotely_and_every_change_is_audited(tmp_path: Path) -> None:
    with live_service(tmp_path / "server") as live:
        made = live.cli(
            live.admin, "token", "create", "--role", "viewer", "--name", "carol",
            "--reason", "auditor, ticket 9", "--json",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        secret = json.loads(made.stdout)["token"]
        assert live.cli_json(secret, "host", "list") == []

        listed = live.cli(live.admin, "token", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert secret not in listed.stdout
        assert {"name": "carol", "role": "viewer"}.items() <= next(
            t for t in json.loads(listed.stdout) if t["name"] == "carol"
        ).items()

        refused = live.cli(
            live.operator, "token", "create", "--role", "admin", "--name", "mallory",
            "--reason", "me",
        )  # fmt: skip
        assert refused.returncode == 1
        assert "Only the admin role may manage API tokens" in refused.stderr

        gone = live.cli(live.admin, "token", "revoke", "carol", "--reason", "audit done")
        assert gone.returncode == 0, gone.stderr
        assert "Token 'carol' revoked." in gone.stdout
        after = live.cli(secret, "host", "list")
        assert after.returncode == 1
        assert "not known to this server, or it was revoked" in after.stderr

        with live.http(live.admin) as client:
            events = client.get("/v1/audit").json()
        tokens = [
            e
            for e in events
            if e["action"] in ("token.created", "token.revoked") and e["who"] == "admin"
        ]
        assert [(e["action"], e["who"], e["reason"]) for e in tokens] == [
            ("token.revoked", "admin", "audit done"),
            ("token.created", "admin", "auditor, ticket 9"),
        ]
        assert secret not in json.dumps(events)
