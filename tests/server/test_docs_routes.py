"""The endpoints the documentation names exist, with the methods it names (issue 12, item 16:
docs/vtpm.md named a key-release endpoint that is not the one key release calls)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hostseal.server import create_app
from hostseal.server.settings import ServerSettings

DOCS = Path(__file__).resolve().parents[2] / "docs"
_METHODS = r"(?:GET|POST|PUT|DELETE)"
_MENTION = re.compile(rf"`({_METHODS}(?:/{_METHODS})*) (/v1/[^`?\s]*)")


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every operation in the server's OpenAPI document."""
    app = create_app(ServerSettings(data_dir=tmp_path / "data"))
    try:
        paths = app.openapi()["paths"]
    finally:
        app.state.ctx.close()
    found = {("GET", "/v1/openapi.json")}
    for path, operations in paths.items():
        found |= {(method.upper(), re.sub(r"\{[^}]+\}", "{}", path)) for method in operations}
    return found


def _mentions(doc: str) -> list[tuple[str, str]]:
    text = (DOCS / doc).read_text()
    out = []
    for match in _MENTION.finditer(text):
        path = re.sub(r"\{[^}]+\}", "{}", match.group(2))
        out += [(method, path) for method in match.group(1).split("/")]
    return out


@pytest.mark.parametrize("doc", ["vtpm.md", "api.md"])
def test_documented_endpoints_exist(doc: str, tmp_path: Path) -> None:
    routes = _routes(tmp_path)
    mentions = _mentions(doc)
    assert mentions, f"docs/{doc} names no endpoint"
    missing = [m for m in mentions if m not in routes]
    assert missing == [], f"docs/{doc} names endpoints the server does not have"


def test_vtpm_doc_names_the_endpoint_key_release_calls() -> None:
    section = (DOCS / "vtpm.md").read_text().split("## Key release tied to attestation")[1]
    section = section.split("\n## ")[0]
    assert "`GET /v1/attest/status`" in section
    assert "/v1/hosts/" not in section
