"""Print hostseal's runtime dependencies, pinned to the versions installed in this Python
environment (``scripts/build-deb --lock`` runs it with .venv/bin/python): the body of
packaging/requirements.txt. Development tools (the ``dev`` extra) are left out."""

from __future__ import annotations

import importlib.metadata as metadata
import re

from packaging.requirements import Requirement


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(root: str = "hostseal") -> dict[str, str]:
    """Every distribution ``root`` needs at run time on this machine, with its version."""
    found: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    done: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, extras = todo.pop()
        if (_key(name), extras) in done:
            continue
        done.add((_key(name), extras))
        dist = metadata.distribution(name)
        found[_key(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": e}) for e in ("", *extras)
            )
            if wanted:
                todo.append((req.name, tuple(sorted(req.extras))))
    found.pop(_key(root))
    return found


if __name__ == "__main__":
    for name, version in sorted(pinned().items()):
        print(f"{name}=={version}")
